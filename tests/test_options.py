"""ssd.options: every numeric option of train.py, evaluate.py, demo.py and deploy.py is checked
while parsing (exit 2, a message naming the option and the value), and the defaults are shared."""
import argparse

import mxnet as mx
import pytest

import demo
import deploy
import evaluate
import symbols.ssd
import train
from ssd import options
from ssd.inference import models

pytestmark = pytest.mark.unit

SCRIPTS = {'train': train, 'evaluate': evaluate, 'demo': demo, 'deploy': deploy}


def refused(script, arguments, capsys):
    """The error line argparse printed when ``script`` refused ``arguments`` with exit status 2."""
    with pytest.raises(SystemExit) as stop:
        SCRIPTS[script].parse_args(arguments)
    assert stop.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize('script, arguments, message', [
    ('demo', ['--thresh', 'nan'], 'argument --thresh: expected a number from 0 to 1, got nan'),
    ('demo', ['--thresh', '2'], 'argument --thresh: expected a number from 0 to 1, got 2'),
    ('demo', ['--thresh', '-1'], 'argument --thresh: expected a number from 0 to 1, got -1'),
    ('demo', ['--nms', 'nan'], 'argument --nms: expected a number from 0 to 1, got nan'),
    ('demo', ['--nms-topk', '0'], 'argument --nms-topk: expected an integer >= 1, or -1 for no limit, got 0'),
    ('demo', ['--max-pixels', '0'], 'argument --max-pixels: expected an integer >= 1, got 0'),
    ('demo', ['--epoch', 'last'], "argument --epoch: expected an epoch number or 'best', got 'last'"),
    ('train', ['--lr', 'nan'], 'argument --lr: expected a finite number >= 0, got nan'),
    ('train', ['--lr', '-1'], 'argument --lr: expected a finite number >= 0, got -1'),
    ('train', ['--lr', 'fast'], "argument --lr: expected a finite number >= 0, got 'fast'"),
    ('train', ['--lr-steps', '18,15'], "argument --lr-steps: expected epochs in increasing order, got '18,15'"),
    ('train', ['--lr-steps', '15,15'], "argument --lr-steps: expected epochs in increasing order, got '15,15'"),
    ('train', ['--lr-steps', '15,x'], "argument --lr-steps: expected a comma list of epochs >= 1, got '15,x'"),
    ('train', ['--lr-steps', '0'], "argument --lr-steps: expected a comma list of epochs >= 1, got '0'"),
    ('train', ['--data-shape', '0'], 'argument --data-shape: expected an integer >= 1, got 0'),
    ('train', ['--freeze', '(conv'], "argument --freeze: not a valid regular expression '(conv': missing ), "
                                     "unterminated subpattern at position 0"),
    ('train', ['--warmup-epochs', 'nan'], 'argument --warmup-epochs: expected a finite number >= 0, got nan'),
    ('train', ['--lr-factor', '0'], 'argument --lr-factor: expected a finite number > 0, got 0'),
    ('train', ['--momentum', '1'], 'argument --momentum: expected a number from 0 to below 1, got 1'),
    ('train', ['--wd', 'inf'], 'argument --wd: expected a finite number >= 0, got inf'),
    ('train', ['--batch-size', '0'], 'argument --batch-size: expected an integer >= 1, got 0'),
    ('train', ['--max-expand', '0.5'], 'argument --max-expand: expected a finite number >= 1 (1: no zoom-out), '
                                       'got 0.5'),
    ('train', ['--max-expand', 'nan'], 'argument --max-expand: expected a finite number >= 1 (1: no zoom-out), '
                                       'got nan'),
    ('train', ['--overlap', '1.5'], 'argument --overlap: expected a number from 0 to 1, got 1.5'),
    ('train', ['--num-workers', '-1'], 'argument --num-workers: expected an integer >= 0, got -1'),
    ('train', ['--gpus', '0,x'], "argument --gpus: expected a comma list of GPU numbers, got '0,x'"),
    ('train', ['--num-cpu-contexts', '0'], 'argument --num-cpu-contexts: expected an integer >= 1, got 0'),
    ('train', ['--end-epoch', '3', '--resume', '3'], '--end-epoch 3 must be after the first epoch to train (4)'),
    ('evaluate', ['--batch-size', '0'], 'argument --batch-size: expected an integer >= 1, got 0'),
    ('evaluate', ['--nms', '-0.1'], 'argument --nms: expected a number from 0 to 1, got -0.1'),
    ('deploy', ['--batch-size', '0'], 'argument --batch-size: expected an integer >= 1, got 0'),
    ('deploy', ['--nms-topk', 'many'], "argument --nms-topk: expected an integer >= 1, or -1 for no limit, "
                                       "got 'many'"),
    # issue 14, further new-user mistakes
    ('demo', ['--thresh', 'abc'], "argument --thresh: expected a number from 0 to 1, got 'abc'"),
    ('demo', ['--nms-topk', '-5'], 'argument --nms-topk: expected an integer >= 1, or -1 for no limit, got -5'),
    ('demo', ['--max-pixels', 'abc'], "argument --max-pixels: expected an integer >= 1, got 'abc'"),
    ('demo', ['--gpu', 'a'], "argument --gpu: invalid int value: 'a'"),
    ('train', ['--prefix', ''], "argument --prefix: expected a folder and a file name stem such as model/ssd, got ''"),
    ('train', ['--prefix', 'model/'], "argument --prefix: expected a folder and a file name stem such as model/ssd, "
                                      "got 'model/'"),
    ('train', ['--kv-store', 'nonsense'], "argument --kv-store: invalid choice: 'nonsense' (choose from 'local', "
                                          "'device', 'dist_sync', 'dist_async')"),
    ('train', ['--lr-factor', 'nan'], 'argument --lr-factor: expected a finite number > 0, got nan'),
    ('train', ['--val-interval', '-1'], 'argument --val-interval: expected an integer >= 0, got -1'),
    ('train', ['--min-neg-samples', '-1'], 'argument --min-neg-samples: expected an integer >= 0, got -1'),
    ('train', ['--end-epoch', '0'], 'argument --end-epoch: expected an integer >= 1, got 0'),
    ('train', ['--begin-epoch', '5', '--end-epoch', '3'], '--end-epoch 3 must be after the first epoch to train (6)'),
    ('train', ['--resume', 'last'], "argument --resume: expected an epoch number or 'latest', got 'last'"),
    ('train', ['--seed', 'abc'], "argument --seed: invalid int value: 'abc'"),
    ('evaluate', ['--batch-size', '-3'], 'argument --batch-size: expected an integer >= 1, got -3'),
    ('evaluate', ['--num-workers', '-1'], 'argument --num-workers: expected an integer >= 0, got -1'),
    ('evaluate', ['--gpus', 'a'], "argument --gpus: expected a comma list of GPU numbers, got 'a'"),
    ('evaluate', ['--epoch', '-1'], "argument --epoch: expected an epoch number or 'best', got '-1'"),
    ('deploy', ['--epoch', 'abc'], "argument --epoch: expected an epoch number or 'best', got 'abc'"),
    ('deploy', ['--onnx-opset', '5'], 'argument --onnx-opset: expected an ONNX opset from 13 to 17, got 5'),
    ('deploy', ['--onnx-opset', 'x'], "argument --onnx-opset: expected an ONNX opset from 13 to 17, got 'x'"),
])
def test_bad_numbers_exit_2_naming_the_option_and_value(script, arguments, message, capsys):
    assert refused(script, arguments, capsys).endswith(message)


@pytest.mark.parametrize('script', ['train', 'evaluate'])
def test_gpus_are_checked_against_the_gpus_mxnet_sees(script, capsys, monkeypatch):
    monkeypatch.setattr(mx.context, 'num_gpus', lambda: 2)
    assert SCRIPTS[script].parse_args(['--gpus', ' 0, 1']).gpus == '0,1'
    assert refused(script, ['--gpus', '1,2'], capsys).endswith(
        'argument --gpus: no GPU 2: this machine (and MXNet build) has 2 GPU(s); leave --gpus empty to run on the CPU')
    monkeypatch.setattr(mx.context, 'num_gpus', lambda: 0)
    assert refused(script, ['--gpus', '0'], capsys).endswith('no GPU 0: this machine (and MXNet build) has 0 GPU(s); '
                                                             'leave --gpus empty to run on the CPU')


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
    a_file = tmp_path / 'file.txt'
    a_file.write_text('x')
    assert refused('demo', ['--out-dir', str(a_file)], capsys).endswith(
        f'argument --out-dir: {a_file} is a file, not a folder')
    assert refused('demo', ['--json', str(tmp_path)], capsys).endswith(
        f'argument --json: {tmp_path} is a folder, not a file')
    assert refused('evaluate', ['--save-detections', str(a_file / 'sub' / 'd.json')], capsys).endswith(
        f"argument --save-detections: cannot write {a_file / 'sub' / 'd.json'}: {a_file} is a file, not a folder")
    assert refused('evaluate', ['--results-dir', str(a_file)], capsys).endswith(
        f'argument --results-dir: {a_file} is a file, not a folder')
    assert refused('deploy', ['--onnx', str(tmp_path)], capsys).endswith(
        f'argument --onnx: {tmp_path} is a folder, not a file')
    # before: tracebacks from os.makedirs / logging once the run had started
    assert refused('train', ['--prefix', str(a_file / 'ssd')], capsys).endswith(
        f"argument --prefix: cannot write {a_file / 'ssd'}: {a_file} is a file, not a folder")
    assert refused('train', ['--log', str(tmp_path)], capsys).endswith(
        f'argument --log: {tmp_path} is a folder, not a file')
    fresh = tmp_path / 'new' / 'deeper'
    assert demo.parse_args(['--out-dir', str(fresh), '--json', str(fresh / 'd.json')]).out_dir == str(fresh)


def test_good_values_are_parsed_to_numbers():
    args = train.parse_args(['--lr', '0', '--lr-steps', ' 3, 10 ,20', '--freeze', '^conv[12]_',
                             '--warmup-epochs', '0.5', '--gpus', ''])
    assert args.lr == 0.0 and args.lr_steps == [3, 10, 20] and args.freeze == '^conv[12]_'
    assert args.warmup_epochs == 0.5 and args.gpus == ''
    assert train.parse_args(['--lr-steps', '']).lr_steps == []
    assert demo.parse_args(['--thresh', '0', '--nms', '1', '--nms-topk', '-1']).nms_topk == -1
    with pytest.raises(argparse.ArgumentTypeError, match='expected a number from 0 to 1'):
        options.probability('1.0000001')


def test_defaults_are_written_once_and_shared():
    parsed = {name: SCRIPTS[name].parse_args([]) for name in ('train', 'evaluate', 'deploy')}
    for args in parsed.values():
        assert (args.nms, args.nms_topk, args.force_nms) == (symbols.ssd.NMS_THRESH, symbols.ssd.NMS_TOPK, False)
    assert (symbols.ssd.NMS_THRESH, symbols.ssd.NMS_TOPK) == (0.45, 400)
    assert models.NMS_DEFAULTS == {'nms_thresh': 0.45, 'force_suppress': False, 'nms_topk': 400}
    demo_args = demo.parse_args([])  # None: "not given", so that a --deploy graph can refuse them
    assert (demo_args.nms, demo_args.nms_topk, demo_args.force_nms) == (None, None, None)
    for key in ('use_difficult', 'voc07', 'overlap', 'dataset', 'num_workers', 'gpus', 'num_cpu_contexts'):
        assert getattr(parsed['train'], key) == getattr(parsed['evaluate'], key), key
    assert parsed['train'].use_difficult is options.USE_DIFFICULT is False
    for dataset, (train_sets, val_sets) in options.DEFAULT_SETS.items():
        args = train.parse_args(['--dataset', dataset])
        assert args.train_sets == [s for s in train_sets.split(',') if s]
        assert args.val_sets == evaluate.parse_args(['--dataset', dataset]).val_sets == \
            [s for s in val_sets.split(',') if s]
