# JupyterHub configuration for the mi-course: DockerSpawner, nbgrader's file
# exchange on a shared volume, two single-user images (students without the
# formgrader and create-assignment extensions, instructors with them and with
# the formgrader iframe workaround for JupyterHub >= 4.1). Written
# for JupyterHub 5.x and DockerSpawner 14; step by step in README.md beside it.
#
#   who          hub group             image                 volumes
#   students     nbgrader-mi-course    mi-course-student     own home, exchange
#   instructors  formgrade-mi-course   mi-course-instructor  own home, exchange, course
#
# The group names follow nbgrader's convention (nbgrader-<course>,
# formgrade-<course>), so nbgrader's JupyterHubAuthPlugin can be switched on later.
# Nothing here imports jupyterhub: classes are named by string, so the file also
# loads where JupyterHub is not installed (tests/test_jupyterhub_config.py).
import os

c = get_config()  # noqa: F821

COURSE_ID = "mi-course"                  # = c.CourseDirectory.course_id in autograder/nbgrader_config.py
EXCHANGE = "/srv/nbgrader/exchange"      # = c.Exchange.root in nbgrader_config.py beside this file
EXCHANGE_VOLUME = "mi-course-exchange"   # Docker volume shared by every server
COURSE_VOLUME = "mi-course-course"       # Docker volume with the instructors' checkout of the course
HOME = "/home/jovyan"                    # the docker-stacks user's home
COURSE_DIR = f"{HOME}/mi-course"         # where instructors see the checkout ($MI_COURSE_ROOT)
STUDENT_IMAGE = "mi-course-student:latest"
INSTRUCTOR_IMAGE = "mi-course-instructor:latest"
STUDENTS = f"nbgrader-{COURSE_ID}"
INSTRUCTORS = f"formgrade-{COURSE_ID}"

# --- users -------------------------------------------------------------------
# Your class list (JupyterHub names, which are also the nbgrader student ids).
INSTRUCTOR_USERS = ["instructor"]
STUDENT_USERS = ["student1", "student2"]

c.JupyterHub.load_groups = {
    INSTRUCTORS: {"users": INSTRUCTOR_USERS},
    STUDENTS: {"users": STUDENT_USERS},
}
c.Authenticator.allowed_users = set(INSTRUCTOR_USERS + STUDENT_USERS)
c.Authenticator.admin_users = set(INSTRUCTOR_USERS)

# Authentication is your site's choice (OAuthenticator, LTI 1.3, LDAP, ...). For
# a trial run: shared passwords from the environment (JupyterHub >= 5.3). Anyone
# with the user password can log in as any student; instructors (admins) need
# the admin password (32+ characters). Unset, nobody can log in.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = os.environ.get("MI_COURSE_USER_PASSWORD") or None
c.SharedPasswordAuthenticator.admin_password = os.environ.get("MI_COURSE_ADMIN_PASSWORD") or None

# --- the hub itself (in a container on the Docker network below) --------------
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = "jupyterhub"  # the hub container's name on that network
# Keep the hub's database: user ids (and so the students' uids below) must not change.
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/data/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/srv/jupyterhub/data/jupyterhub_cookie_secret"

# --- single-user servers --------------------------------------------------------
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.network_name = os.environ.get("DOCKER_NETWORK_NAME", "mi-course-hub")
c.DockerSpawner.image = STUDENT_IMAGE      # instructors get theirs in per_role() below
c.DockerSpawner.remove = True              # containers are disposable; the volumes keep the work
c.DockerSpawner.notebook_dir = HOME
c.DockerSpawner.volumes = {
    "mi-course-home-{username}": HOME,
    EXCHANGE_VOLUME: EXCHANGE,
}
# Start as root so that the image's start script can give each user a uid of
# their own before dropping to it (NB_UID below): nbgrader's exchange relies on
# Unix permissions (students may write into inbound/ but not list it), which
# mean nothing if every container runs as the same uid 1000.
c.DockerSpawner.extra_create_kwargs = {"user": "root"}
c.Spawner.default_url = "/lab"
c.Spawner.cpu_limit = 2
c.Spawner.mem_limit = "4G"  # the embedded model needs ~1 GB; lessons 5-7 train and patch
c.Spawner.environment = {"OMP_NUM_THREADS": "2"}  # torch: one thread per CPU it may use
c.Spawner.http_timeout = 120

# The formgrader tab and JupyterHub >= 4.1: single-user servers then send
# "Content-Security-Policy: frame-ancestors 'none'", which blanks the tab that
# embeds the formgrader (https://github.com/jupyter/nbgrader/issues/1870). The
# instructor image restores "frame-ancestors 'self'" (nbgrader's documented
# workaround, https://github.com/jupyter/nbgrader/pull/1947; see the Dockerfile);
# students' servers keep 'none'. Without subdomains that trusts the users on the
# hub's origin; with wildcard DNS and a wildcard TLS certificate, per-user
# subdomains make it safe:
# c.JupyterHub.subdomain_host = "https://hub.example.org"

UID_BASE = 10000      # students: uid 10000 + their hub user id
INSTRUCTOR_UID = 1000  # instructors share one uid: they share the course volume


def per_role(spawner):
    """Pick image, volumes, uid and settings from the user's hub group."""
    groups = {group.name for group in spawner.user.groups}
    if INSTRUCTORS in groups:
        instructor = True
    elif STUDENTS in groups:
        instructor = False
    else:
        raise PermissionError(f"{spawner.user.name} is in neither {STUDENTS} nor {INSTRUCTORS}: add them to one")
    uid = INSTRUCTOR_UID if instructor else UID_BASE + spawner.user.id
    environment = dict(spawner.environment)
    # Read by the docker-stacks start script (running as root, see above):
    environment.update({"NB_UID": str(uid), "CHOWN_HOME": "yes", "CHOWN_HOME_OPTS": "-R"})
    spawner.environment = environment
    if instructor:
        spawner.image = INSTRUCTOR_IMAGE
        spawner.volumes = {**spawner.volumes, COURSE_VOLUME: COURSE_DIR}
        # read by mi-course (the course checkout) and by nbgrader_config.py (the formgrader)
        spawner.environment = {**spawner.environment, "MI_COURSE_ROOT": COURSE_DIR}
        spawner.cpu_limit = 4          # for `mi-course autograde --jobs N`
        spawner.mem_limit = "16G"
    else:
        spawner.image = STUDENT_IMAGE
        # Ignore ~/.jupyter: a student cannot switch the nbgrader extensions back on.
        spawner.disable_user_config = True


c.Spawner.pre_spawn_hook = per_role
