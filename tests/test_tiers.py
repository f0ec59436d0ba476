"""The suite's own rule: every test carries exactly one tier marker (tests/conftest.py)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CONFTEST = Path(__file__).with_name('conftest.py')


def run_pytest(folder, source):
    shutil.copy(CONFTEST, folder / 'conftest.py')
    (folder / 'test_sample.py').write_text(source)
    return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                           '--rootdir', str(folder), str(folder)],
                          cwd=folder, capture_output=True, text=True, timeout=120)


def test_tests_without_one_tier_stop_the_run(tmp_path):
    result = run_pytest(tmp_path, "import pytest\n\n"
                                  "def test_none():\n    assert True\n\n\n"
                                  "@pytest.mark.unit\n@pytest.mark.e2e\n"
                                  "def test_two():\n    assert True\n")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'test_sample.py::test_none: no tier' in output
    assert "test_sample.py::test_two: ['e2e', 'unit']" in output


def test_one_tier_per_test_runs(tmp_path):
    result = run_pytest(tmp_path, "import pytest\n\npytestmark = pytest.mark.parity\n\n\n"
                                  "def test_one():\n    assert True\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert '1 passed' in result.stdout
