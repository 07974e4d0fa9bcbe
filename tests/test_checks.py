"""The shared checks convert before comparing, and refuse objects that lie."""

import numpy as np
import pytest
import torch

from mi_course import checks


class Liar:
    """Equal to everything, like a hostile submission."""

    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


def test_lying_objects_fail_every_conversion():
    for convert in (checks.as_int, checks.as_float, checks.as_str, checks.as_list, checks.as_tensor):
        with pytest.raises(checks.ExerciseError):
            convert(Liar(), "answer")


def test_str_subclass_is_copied_to_a_plain_str():
    class LyingStr(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    plain = checks.as_str(LyingStr("abc"))
    assert type(plain) is str and plain != "xyz"


def test_conversions_accept_plain_and_tensor_values():
    assert checks.as_int(np.int64(3)) == 3 and checks.as_int(torch.tensor(4)) == 4
    assert checks.as_float(torch.tensor([0.5])) == 0.5
    with pytest.raises(checks.ExerciseError, match="should be an int"):
        checks.as_int(True)
    with pytest.raises(checks.ExerciseError, match="division by zero"):
        checks.as_float(float("nan"))
    with pytest.raises(checks.ExerciseError, match="shape"):
        checks.as_tensor(torch.zeros(2, 3), shape=(3, 2))
    assert checks.as_list((1, 2), item=checks.as_int) == [1, 2]


def test_assert_close_reports_where_and_by_how_much():
    with pytest.raises(checks.ExerciseError, match=r"index \(1,\)"):
        checks.assert_close(torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0]), "x")
    checks.assert_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-6]), "x")
    with pytest.raises(checks.ExerciseError, match="expected 2"):
        checks.assert_close(3.0, 2.0, "y")


def test_probabilities_check_recognises_logits():
    logits = torch.randn(10) * 5
    with pytest.raises(checks.ExerciseError, match="logits"):
        checks.assert_probabilities(logits)
    with pytest.raises(checks.ExerciseError, match="sums to"):
        checks.assert_probabilities(torch.full((10,), 0.05))
    checks.assert_probabilities(logits.softmax(-1))


def test_own_work_catches_a_reference_under_any_name_and_spares_supplied_ones():
    from mi_course import tokens
    from mi_course.checks import ExerciseError, own_work, supplied
    from mi_course.tokens import str_tokens as alias

    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

        def decode(self, ids):
            return "".join(map(chr, ids))

    model = type("M", (), {"tokenizer": Tok()})()
    mine = lambda text: [model.tokenizer.decode([i]) for i in model.tokenizer(text)["input_ids"]]  # noqa: E731
    with own_work("mine", tokens.str_tokens):
        assert mine("ab") == ["a", "b"]
    for cheat in (lambda text: alias(model, text), lambda text: tokens.str_tokens(model, text)):
        with pytest.raises(ExerciseError, match="calls the course's own reference"):
            with own_work("cheat", tokens.str_tokens):
                cheat("ab")
    with pytest.raises(ExerciseError, match="calls the course's own reference"):
        with own_work("cheat", tokens):            # a whole module
            alias(model, "ab")
    given = supplied(lambda text: alias(model, text))
    with own_work("later", tokens.str_tokens):
        given("ab")


def test_own_work_requires_the_tool_the_exercise_names():
    from mi_course.checks import ExerciseError, own_work

    layer = torch.nn.Linear(2, 2)
    with own_work("hooked", uses="hooks"):
        handle = layer.register_forward_hook(lambda m, i, o: None)
        layer(torch.ones(2))
        handle.remove()
    with pytest.raises(ExerciseError, match="ran without a PyTorch hook"):
        with own_work("plain", uses="hooks"):
            layer(torch.ones(2))


def test_exercise_supplies_the_reference_when_the_check_fails(capsys):
    from mi_course.checks import exercise

    namespace = {"answer": 41}
    with exercise(namespace, answer=lambda: 42):
        pass
    assert namespace["answer"] == 41
    with pytest.raises(AssertionError):
        with exercise(namespace, answer=lambda: 42):
            assert namespace["answer"] == 42
    assert namespace["answer"] == 42 and "reference value of `answer`" in capsys.readouterr().out


def test_own_work_names_the_function_that_ran_and_watches_properties():
    import contextlib

    from mi_course import tokens
    from mi_course.checks import ExerciseError, own_work

    with pytest.raises(ExerciseError, match=r"`mi_course\.tokens\.str_tokens`"):
        with own_work("cheat", tokens):
            with contextlib.suppress(AttributeError):
                tokens.str_tokens(None, "x")

    class Holder:
        @property
        def value(self):
            return 1

    with pytest.raises(ExerciseError, match=r"`test_checks\.[\w.<>]*Holder\.value`"):
        with own_work("cheat", Holder.value):          # a property
            assert Holder().value == 1
