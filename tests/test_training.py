"""ssd.training.engine's pieces on small hand-made inputs: configuration, initialiser, schedule, checkpoints."""
import os

import mxnet as mx
import pytest

import train
from ssd import checkpoint
from ssd.training import engine
from ssd.training.engine import TrainConfig

pytestmark = pytest.mark.unit


def test_script_defaults_are_the_engine_defaults():
    assert train.config_from_args(train.parse_args([])) == TrainConfig()


def test_script_options_become_config_fields(monkeypatch):
    monkeypatch.setattr(mx.context, 'num_gpus', lambda: 2)  # --gpus is checked against the GPUs MXNet sees
    config = train.config_from_args(train.parse_args(['--dataset', 'voc', '--lr-steps', '3,5', '--lr', '0.1',
                                                      '--no-voc07', '--gpus', '0,1']))
    assert config.train_sets == ('2007_trainval', '2012_trainval') and config.val_sets == ('2007_test',)
    assert config.lr_steps == (3, 5) and config.lr == 0.1 and config.voc07 is False and config.gpus == '0,1'


def test_weights_start_at_he_fan_in_scale():
    # A depthwise 3x3 filter has fan-in 9: std sqrt(2/9). mxnet-ssd's fan-out variant gives
    # sqrt(2/(9*256)) for 256 channels; behind BatchNorm such small weights get a huge effective
    # learning rate, and from-scratch MobileNet training diverged in its first steps.
    depthwise = mx.nd.zeros((256, 1, 3, 3))
    engine.INITIALIZER(mx.init.InitDesc('mobilenet_conv25_weight'), depthwise)
    assert abs(float(depthwise.asnumpy().std()) - (2 / 9) ** 0.5) < 0.03
    bias = mx.nd.ones((8,))
    engine.INITIALIZER(mx.init.InitDesc('relu10_cls_pred_conv_bias'), bias)
    assert not bias.asnumpy().any()


@pytest.mark.parametrize('mode', ['step', 'cosine'])
def test_learning_rate_schedule_warms_up_then_decays(mode):
    config = TrainConfig(lr=0.01, lr_mode=mode, lr_steps=(3,), lr_factor=0.1, warmup_epochs=1, end_epoch=4)
    scheduler = engine.make_optimizer(config, begin_epoch=0, batches_per_epoch=10, num_devices=1).lr_scheduler
    assert scheduler(0) == pytest.approx(0.0001)  # warm-up starts at lr / 100
    assert scheduler(10) == pytest.approx(0.01)  # full lr once the first epoch is done
    if mode == 'step':
        assert scheduler(29) == pytest.approx(0.01) and scheduler(31) == pytest.approx(0.001)
    else:  # half-way through the 30 post-warm-up updates: half the lr; zero at the end
        assert scheduler(25) == pytest.approx(0.005) and scheduler(40) == pytest.approx(0.0)


def small_module(optimizer):
    """A bound 2 -> 1 linear Module with a loss, updating with ``optimizer``."""
    loss = mx.sym.MakeLoss(mx.sym.sum(mx.sym.FullyConnected(mx.sym.var('data'), num_hidden=1, name='fc')))
    module = mx.mod.Module(loss, data_names=['data'], label_names=None)
    module.bind(data_shapes=[('data', (1, 2))])
    module.init_params(mx.init.One())
    module.init_optimizer(kvstore=mx.kv.create('local'), optimizer=optimizer)
    return module


@pytest.mark.parametrize('distributed', [False, True])
def test_save_writes_optimizer_states_unless_a_parameter_server_keeps_them(tmp_path, distributed):
    module = small_module(mx.optimizer.create('sgd', learning_rate=0.5, momentum=0.9))
    module.forward_backward(mx.io.DataBatch(data=[mx.nd.array([[1, 2]])]))
    module.update()  # weight (1, 1) - 0.5 * (1, 2); bias 0 (initialisers zero biases) - 0.5 * 1
    prefix = str(tmp_path / 'net')
    engine.save(module, prefix, 3, {'epoch': 3}, distributed)
    arg, _ = checkpoint.load_params(checkpoint.params_path(prefix, 3))
    assert arg['fc_weight'].asnumpy().tolist() == [[0.5, 0.0]] and arg['fc_bias'].asnumpy().tolist() == [-0.5]
    assert os.path.isfile(checkpoint.states_path(prefix, 3)) is not distributed
