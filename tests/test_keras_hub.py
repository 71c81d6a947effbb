"""Image classifiers from keras_hub, built from small configurations with random weights (no download): every
method explains them, LRP methods included, and the engine replays their logits.

Most of them were refused by the LRP methods before:
- the patch embeddings of the ViT, DeiT, DINOv2 and DINOv3 tile their class (distillation, register) tokens to
  the batch size, and DeiT's encoder blocks return ``(x, None)``
  (``sglrp_widgets.equivalents.KNOWN_EQUIVALENTS`` opens these layers as equivalents);
- Swin's blocks divide the batch size by the number of windows (opened as an equivalent that keeps the batch an
  axis of its own);
- MiT reshapes to ``(batch, -1, channels)``; HGNetV2 multiplies ``self.scale * x``;
- MobileNetV5 writes its RMS normalisation as ``x * rsqrt(mean(x²) + eps)`` (the reciprocal factor is held, as a
  divisor is) in blocks that pass ``training`` on to it, and resizes with ``keras.ops.image.resize``;
- CSPNet's stages cut their channels with ``keras.ops.split``.
EfficientNet, MobileNet and ResNetV2 worked before; they are here to stay that way."""
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402

from architectures import alive  # noqa: E402
from sglrp_widgets import Explainer, method_support  # noqa: E402
from sglrp_widgets.canonize import canonize  # noqa: E402
from sglrp_widgets.graph import read_model  # noqa: E402
from sglrp_widgets.lrp import relevance_flow  # noqa: E402

M = keras_hub.models
SIDE = 32


def vit():
    backbone = M.ViTBackbone(image_shape=(SIDE, SIDE, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                             mlp_dim=32)
    return M.ViTImageClassifier(backbone=backbone, num_classes=5, preprocessor=None, activation=None)


def deit():
    backbone = M.DeiTBackbone(image_shape=(SIDE, SIDE, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                              intermediate_dim=32)
    return M.DeiTImageClassifier(backbone=backbone, num_classes=5, preprocessor=None, activation=None)


def resnet_v2():
    """Pre-activation ResNet: its stem pads with -inf in front of the max pooling."""
    backbone = M.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32],
                                stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
                                use_pre_activation=True, image_shape=(SIDE, SIDE, 3))
    return M.ResNetImageClassifier(backbone=backbone, num_classes=5, preprocessor=None, activation=None)


def mit():
    backbone = M.MiTBackbone(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
                             layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3],
                             layerwise_strides=[4, 2], image_shape=(SIDE, SIDE, 3), hidden_dims=[8, 16])
    return M.MiTImageClassifier(backbone=backbone, num_classes=5, preprocessor=None, activation=None)


def hgnet():
    backbone = M.HGNetV2Backbone(depths=[1, 1], embedding_size=16, hidden_sizes=[16, 32], stem_channels=[3, 8, 16],
                                 hidden_act="relu", use_learnable_affine_block=True,
                                 stackwise_stage_filters=[[16, 8, 16, 1, 1, 3], [16, 8, 32, 1, 1, 3]],
                                 apply_downsample=[False, True], use_lightweight_conv_block=[False, True],
                                 image_shape=(SIDE, SIDE, 3))
    return M.HGNetV2ImageClassifier(backbone=backbone, num_classes=5, preprocessor=None, activation=None)


def dinov2():
    """A DINOv2 backbone (with register tokens) and a linear head on its class token, as fine-tuned."""
    backbone = M.DINOV2Backbone(patch_size=8, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
                                num_register_tokens=2, image_shape=(SIDE, SIDE, 3),
                                position_embedding_shape=(SIDE, SIDE, 3))
    inputs = keras.Input((SIDE, SIDE, 3))
    return keras.Model(inputs, keras.layers.Dense(5)(backbone({"images": inputs})[:, 0]))


def dinov3():
    """A DINOv3 backbone (register tokens, rotary position embeddings) and a linear head on its class token."""
    backbone = M.DINOV3Backbone(patch_size=8, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
                                num_register_tokens=2, image_shape=(SIDE, SIDE, 3))
    inputs = keras.Input((SIDE, SIDE, 3))
    return keras.Model(inputs, keras.layers.Dense(5)(backbone({"pixel_values": inputs})[:, 0]))


def cspnet():
    """Cross-stage-partial stages (``cs3``, as CSPResNeXt and CSPDarkNet have them) of bottleneck blocks."""
    backbone = M.CSPNetBackbone(stem_filters=16, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 1],
                                stackwise_strides=[2, 2], stackwise_num_filters=[32, 64],
                                block_type="bottleneck_block", stage_type="cs3", bottle_ratio=[0.5],
                                block_ratio=[0.5], expand_ratio=[1.0], image_shape=(SIDE, SIDE, 3))
    return M.CSPNetImageClassifier(backbone=backbone, num_classes=5, preprocessor=None, activation=None)


def swin():
    """A 10×10 token map in windows of 4: padded to 12 (then 8 after the patch merging), and every second block
    shifts its windows, so the attention mask of shifted windows is used."""
    backbone = M.SwinTransformerBackbone(image_shape=(40, 40, 3), embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                         window_size=4, patch_size=4, drop_path=0.0)
    return M.SwinTransformerImageClassifier(backbone=backbone, num_classes=5, preprocessor=None, activation=None)


def efficientnet():
    backbone = M.EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3, 3], stackwise_num_repeats=[1, 1, 1], stackwise_input_filters=[8, 8, 16],
        stackwise_output_filters=[8, 16, 16], stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25], stackwise_strides=[1, 2, 2],
        stackwise_block_types=["fused", "fused", "unfused"], stackwise_width_coefficients=[1.0] * 3,
        stackwise_depth_coefficients=[1.0] * 3, stackwise_force_input_filters=[0] * 3,
        stackwise_nores_option=[False] * 3, num_features=32, input_shape=(SIDE, SIDE, 3))
    return M.EfficientNetImageClassifier(backbone=backbone, num_classes=5, preprocessor=None, activation=None)


def mobilenet():
    backbone = M.MobileNetBackbone(
        stackwise_expansion=[[40, 56], [64, 144]], stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]], stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]], stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]], stackwise_padding=[[1, 1], [2, 2]],
        output_num_filters=48, depthwise_filters=8, depthwise_stride=2, depthwise_residual=False,
        last_layer_filter=288, squeeze_and_excite=0.5, image_shape=(SIDE, SIDE, 3))
    return M.MobileNetImageClassifier(backbone=backbone, num_classes=5, preprocessor=None, activation=None)


def mobilenet_v5():
    """Gemma 3n's vision tower in small: an edge residual, a universal inverted residual and a multi-query
    attention block, and the multi-scale fusion of the last two stages (which resizes and normalises)."""
    stages = dict(stackwise_block_types=[["er"], ["uir", "mqa"]], stackwise_num_blocks=[1, 2],
                  stackwise_num_filters=[[16], [32, 32]], stackwise_strides=[[2], [2, 1]],
                  stackwise_act_layers=[["relu"], ["relu", "relu"]], stackwise_exp_ratios=[[4.0], [4.0, 4.0]],
                  stackwise_se_ratios=[[0.0], [0.0, 0.0]], stackwise_dw_kernel_sizes=[[0], [5, 0]],
                  stackwise_dw_start_kernel_sizes=[[0], [0, 0]], stackwise_dw_end_kernel_sizes=[[0], [0, 0]],
                  stackwise_exp_kernel_sizes=[[3], [0, 0]], stackwise_pw_kernel_sizes=[[1], [0, 0]],
                  stackwise_num_heads=[[0], [0, 4]], stackwise_key_dims=[[0], [0, 8]],
                  stackwise_value_dims=[[0], [0, 8]], stackwise_kv_strides=[[0], [0, 2]],
                  stackwise_use_cpe=[[False], [False, False]])
    backbone = M.MobileNetV5Backbone(**stages, use_msfa=True, msfa_indices=(0, 1), msfa_output_resolution=4,
                                     num_features=64, image_shape=(SIDE, SIDE, 3))
    return M.MobileNetV5ImageClassifier(backbone=backbone, num_classes=5, preprocessor=None)


MODELS = {"ViT": vit, "DeiT": deit, "MiT": mit, "HGNetV2": hgnet, "DINOv2": dinov2, "DINOv3": dinov3,
          "CSPNet": cspnet, "Swin": swin,
          "ResNetV2": resnet_v2, "EfficientNet": efficientnet, "MobileNet": mobilenet, "MobileNetV5": mobilenet_v5}


@pytest.fixture(scope="module", params=list(MODELS))
def model_and_images(request):
    keras.utils.set_random_seed(4)
    model = MODELS[request.param]()
    x = np.random.default_rng(5).uniform(0, 1, (3,) + tuple(model.input.shape[1:])).astype("float32")
    if any(isinstance(layer, keras.layers.BatchNormalization) for layer in model._flatten_layers()):
        model = alive(model, x)
    return model, x


def test_every_method_explains_the_keras_hub_classifier(model_and_images):
    model, _ = model_and_images
    graph = canonize(read_model(model), fold=True)
    assert not {graph.nodes[i].class_name for i in relevance_flow(graph) if graph.nodes[i].kind == "opaque"}
    support = method_support(model)
    assert {m: why for m, why in support.items() if why and m not in ("grad_cam", "grad_cam_plus_plus",
                                                                     "guided_grad_cam")} == {}


@pytest.mark.parametrize("method", ["sglrp", "lrp.epsilon", "deep_taylor.bounded", "gradient"])
def test_the_keras_hub_classifier_is_replayed_and_its_maps_keep_their_properties(model_and_images, method):
    model, x = model_and_images
    out = Explainer(model, method, cache=None)(x, [0, 3, 1])
    np.testing.assert_allclose(out.logits, np.asarray(model(x)), rtol=1e-4, atol=1e-4)
    assert np.isfinite(out.relevance).all() and np.abs(out.relevance).sum() > 0
    if method == "sglrp":      # the target's and the other classes' shares cancel, up to the safe division's eps
        z = out.logits.astype(np.float64)
        y = np.exp(z - z.max(1, keepdims=True))
        y /= y.sum(1, keepdims=True)
        head = y[np.arange(3), [0, 3, 1]] * (1 - y[np.arange(3), [0, 3, 1]])
        np.testing.assert_array_less(np.abs(out.relevance.reshape(3, -1).sum(1)), 1e-4 * head + 3e-7)
