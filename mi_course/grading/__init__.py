"""nbgrader glue: the course's configuration, release, validation and autograding."""
