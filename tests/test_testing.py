"""The netmem pytest plugin (``netmem.testing``), run on an inner test project the way a user's
project runs it: no ``filterwarnings`` setting, the plugin loaded from its ``pytest11`` entry
point, without this suite's ``filterwarnings = error``."""
import warnings

import pytest

pytest_plugins = ["pytester"]

# A user's tests: each puts one page-pool buffer twice, the model's WARN for a double put.
USER_TESTS = '''
import pytest
from netmem.errors import NetmemWarning


def test_double_put(page_pool):
    ref = page_pool.alloc_netmem()
    page_pool.put_netmem(ref)
    page_pool.put_netmem(ref)


def test_double_put_expected(page_pool):
    ref = page_pool.alloc_netmem()
    page_pool.put_netmem(ref)
    with pytest.warns(NetmemWarning, match="double put"):
        page_pool.put_netmem(ref)


@pytest.mark.netmem_warn_ok
def test_double_put_marked_ok(page_pool):
    ref = page_pool.alloc_netmem()
    page_pool.put_netmem(ref)
    page_pool.put_netmem(ref)


def test_double_put_in_deferred_work(machine, page_pool):
    # The second put runs from a timer, after the pool is destroyed: the leak check's
    # quiesce fires it at teardown.
    ref = page_pool.alloc_netmem()
    page_pool.put_netmem(ref)
    machine.add_timer(1, lambda: page_pool.put_netmem(ref))


def test_clean(page_pool):
    page_pool.put_netmem(page_pool.alloc_netmem())
'''


def run_user_tests(pytester, *args):
    pytester.makepyfile(test_user=USER_TESTS)
    with warnings.catch_warnings():
        warnings.resetwarnings()        # as a user's process starts: no filters of ours
        return pytester.runpytest("-p", "no:cacheprovider", "-rA", *args)


@pytest.fixture
def user_result(pytester):
    return run_user_tests(pytester)


def test_kernel_warns_fail_a_users_tests(user_result):
    """A WARN that reaches the top of a test fails it, naming the WARN and where it came from;
    ``pytest.warns`` and the ``netmem_warn_ok`` marker let one be expected; a WARN from
    deferred work that the leak check's quiesce runs at teardown fails the test too."""
    user_result.assert_outcomes(passed=4, failed=1, errors=1)
    user_result.stdout.fnmatch_lines_random([
        "FAILED test_user.py::test_double_put - Failed: kernel WARN during call*",
        "ERROR test_user.py::test_double_put_in_deferred_work - Failed: kernel WARN du*",
        "PASSED test_user.py::test_double_put_expected",
        "PASSED test_user.py::test_double_put_marked_ok",
        ("kernel WARN during call (expect it with pytest.warns(NetmemWarning), or mark the test "
         "netmem_warn_ok):"),
        "  */test_user.py:8: double put of netmem 0x* (page_pool 1, buffer state ring)*",
        "kernel WARN during teardown *",
        "  */test_user.py:30: put of netmem 0x*: not a page_pool buffer*",
    ])


def test_a_project_may_ignore_kernel_warns_by_name(pytester):
    """``ignore::netmem.errors.NetmemWarning`` is the project's own opt-out; ignoring every
    UserWarning is not one."""
    run_user_tests(pytester, "-W", "ignore::netmem.errors.NetmemWarning").assert_outcomes(
        passed=5)
    run_user_tests(pytester, "-W", "ignore::UserWarning").assert_outcomes(
        passed=4, failed=1, errors=1)
