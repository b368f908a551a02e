import pytest

from divrl.core.registry import Registry, UnknownNameError


def test_register_get_and_names():
    reg: Registry = Registry("widget")

    @reg.register("b")
    def b(x, *, scale=1):
        return x * scale

    @reg.register("a")
    def a(x):
        return x

    assert reg.names() == ["a", "b"]
    assert reg.get("b") is b
    assert reg.call("b", 2, scale=3) == 6
    assert "a" in reg and "zzz" not in reg


def test_same_function_twice_is_fine_different_raises():
    reg: Registry = Registry("widget")

    def f():
        return 1

    reg.register("f")(f)
    reg.register("f")(f)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("f")(lambda: 2)


def test_unknown_name_lists_known():
    reg: Registry = Registry("widget")
    reg.register("alpha")(lambda: 1)
    with pytest.raises(UnknownNameError) as err:
        reg.get("beta")
    assert str(err.value) == "unknown widget 'beta'; known: ['alpha']"


def test_unknown_option_is_named():
    reg: Registry = Registry("widget")

    @reg.register("w")
    def w(x, *, lam=1.0):
        return x

    with pytest.raises(ValueError, match=r"unknown option\(s\) \['lamda'\]; accepted: \['lam'\]"):
        reg.call("w", 1, lamda=2)
