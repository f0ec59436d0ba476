"""demo.py, evaluate.py and deploy.py writing into a full disk: a message naming the file, no
traceback, nothing half written (train.py's checkpoints: test_losing_work.py)."""
import os
import sys

import pytest

from full_disk import FILL, ROOT, run_in_tmpfs
from ssd.data import synthetic
from ssd.options import SHIPPED_EPOCH

pytestmark = pytest.mark.e2e

MB = 1 << 20


def script(name, *arguments):
    return ' '.join([sys.executable, os.path.join(ROOT, name)] + [str(a) for a in arguments])


def leftovers(folder):
    """Everything but the filler left in ``folder`` (copied out of the tmpfs), temporaries included."""
    return sorted(os.path.relpath(os.path.join(top, name), folder)
                  for top, _, names in os.walk(folder) for name in names)


def assert_one_line_error(result, expected_end):
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].endswith(expected_end), result.stderr[-3000:]


@pytest.fixture
def disk(tmp_path):
    (tmp_path / 'disk').mkdir()
    (tmp_path / 'after').mkdir()
    return tmp_path / 'disk', tmp_path / 'after'


def test_evaluate_results_into_a_full_disk_exit_1_naming_the_file(shipped_copy, tmp_path, disk):
    data = tmp_path / 'data'
    synthetic.ensure_dataset(str(data), num_train=1, num_test=3, seed=4)
    folder, after = disk
    result = run_in_tmpfs(folder, MB, [FILL, script(
        'evaluate.py', '--data-root', data, '--prefix', shipped_copy, '--epoch', SHIPPED_EPOCH, '--backend',
        'mxnet', '--num-workers', 0, '--results-dir', f'{folder}/results')], after)
    assert result.returncode == 1
    assert 'mAP' in result.stdout  # the scores were printed before the files were written
    assert_one_line_error(result, f'no space left writing {folder}/results/comp4_det_test_circle.txt')
    assert leftovers(after) == []  # no half-written result file, no temporary


def test_deploy_into_a_full_disk_exit_1_and_leaves_no_deploy_files(shipped_copy, disk):
    folder, after = disk
    copy = f'cp {shipped_copy}-{SHIPPED_EPOCH:04d}.params {shipped_copy}-{SHIPPED_EPOCH:04d}.json {folder}/'
    result = run_in_tmpfs(folder, 16 * MB, [copy, FILL, script('deploy.py', '--prefix', f'{folder}/ssd_synthetic',
                                                                '--epoch', SHIPPED_EPOCH)], after)
    assert result.returncode == 1
    assert_one_line_error(result, f'no space left writing {folder}/ssd_synthetic-deploy-symbol.json')  # written first
    assert leftovers(after) == [f'ssd_synthetic-{SHIPPED_EPOCH:04d}.json', f'ssd_synthetic-{SHIPPED_EPOCH:04d}.params']


def test_demo_into_a_full_disk_names_each_file_it_could_not_write(shipped_copy, disk):
    folder, after = disk
    result = run_in_tmpfs(folder, MB, [FILL, script(
        'demo.py', '--prefix', shipped_copy, '--backend', 'mxnet', '--out-dir', f'{folder}/out', '--json',
        f'{folder}/d.json')], after)
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    images = sorted(name for name in os.listdir(os.path.join(ROOT, 'examples', 'images')) if name.endswith('.jpg'))
    for name in images:  # every image was still tried, each failure named
        target = f"{folder}/out/{name[:-4]}_det.png"
        assert f"cannot write {target} (no space left writing {target})" in result.stderr
    assert f'--json {folder}/d.json: cannot write (no space left writing {folder}/d.json)' in result.stderr
    assert result.stdout.count('sample_') == len(images)  # detections printed all the same
    assert leftovers(after) == []
