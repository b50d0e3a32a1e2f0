"""CLIP ViT weights from the files users have, through `python -m vreid_jax.models.convert_clip`:
every token equal to the torch models' (OpenAI's structure in tests/torch_clip.py, `transformers`'
`CLIPVisionModel` and `CLIPModel`), the errors a wrong file gets, and the overlay onto a model."""

import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from vreid_jax.models import clip_pretrained, clip_vit, convert_clip

torch = pytest.importorskip("torch")
torch_clip = pytest.importorskip("torch_clip")

WIDTH, LAYERS, HEADS, PATCH, OUT = 64, 2, 4, 16, 32
ATOL = 1e-4


def _reference(grid=(14, 14), seed=0):
    visual = torch_clip.VisionTransformer(grid, PATCH, WIDTH, LAYERS, HEADS, OUT)
    return torch_clip.randomize_(visual, seed).eval()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """An OpenAI-layout TorchScript archive (`visual.*`, text keys, scalar buffers) and its
    encoder at the pretrained 14x14 grid."""
    visual = _reference()
    path = tmp_path_factory.mktemp("openai") / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(torch_clip.ClipArchive(visual)), str(path))
    return path, visual


def _convert(weights, out, *args):
    convert_clip.main(["--weights", str(weights), "--out", str(out), *map(str, args)])
    return out


def _images(height, width, seed=0):
    return np.random.default_rng(seed).normal(size=(2, height, width, 3)).astype(np.float32)


def _torch_tokens(visual, images, camera=None):
    with torch.no_grad():
        tokens, projected = visual(
            torch.from_numpy(images).permute(0, 3, 1, 2),
            None if camera is None else torch.from_numpy(camera),
        )
    return tokens.numpy(), projected.numpy()


def _max_diff(ours, theirs):
    return float(np.abs(np.asarray(ours) - theirs).max())


def test_openai_archive_every_token_at_224(archive, tmp_path, capsys):
    path, visual = archive
    npz = _convert(path, tmp_path / "clip.npz", "--height", 224, "--width", 224)
    printed = capsys.readouterr().out
    assert "TorchScript archive; CLIP ViT of width 64, 2 layers, 4 heads, patch 16" in printed
    assert "heads: 4 (the TorchScript archive)" in printed
    assert "ignored 9 arrays outside the image encoder" in printed  # 6 text + 3 buffers
    assert "resized" not in printed

    module, variables = clip_pretrained.from_npz(str(npz))
    images = _images(224, 224)
    ours = module.apply(variables, images)
    tokens, projected = _torch_tokens(visual, images)
    assert ours.tokens.shape == (2, 197, WIDTH) and ours.projected.shape == (2, 197, OUT)
    assert _max_diff(ours.tokens, tokens) < ATOL
    assert _max_diff(ours.projected, projected) < ATOL
    assert [p.name for p in tmp_path.iterdir()] == ["clip.npz"]  # no temporary left behind


def test_openai_archive_every_token_at_256x128_with_camera(archive, tmp_path, capsys):
    """TF-CLIP's setting: positional embedding resized once at load time, camera embedding on
    the class token."""
    path, visual = archive
    npz = _convert(path, tmp_path / "clip.npz")  # 256x128 is the default
    assert "resized from 14x14 to 16x8 tokens" in capsys.readouterr().out

    resized = _reference((16, 8))
    state = dict(visual.state_dict())
    state["positional_embedding"] = torch_clip.resize_pos_embed(
        state["positional_embedding"], 16, 8
    )
    resized.load_state_dict(state)
    module, variables = clip_pretrained.from_npz(str(npz))
    images = _images(256, 128, seed=1)
    camera = np.random.default_rng(2).normal(size=(2, WIDTH)).astype(np.float32)
    ours = module.apply(variables, images, camera)
    tokens, projected = _torch_tokens(resized, images, camera)
    assert ours.tokens.shape == (2, 129, WIDTH)
    assert _max_diff(ours.tokens, tokens) < ATOL
    assert _max_diff(ours.projected, projected) < ATOL
    assert _max_diff(ours.tokens, _torch_tokens(resized, images)[0]) > 1e-2  # camera counts


def test_float16_archive_converts_to_float32(tmp_path):
    """OpenAI's released archives hold float16 weights."""
    visual = _reference().half()
    path = tmp_path / "half.pt"
    torch.jit.save(torch.jit.script(torch_clip.ClipArchive(visual)), str(path))
    npz = _convert(path, tmp_path / "half.npz", "--height", 224, "--width", 224)
    arrays, architecture = clip_pretrained.read_npz(str(npz))
    assert architecture.output_dim == OUT and architecture.grid == (14, 14)
    for name, value in visual.state_dict().items():
        assert arrays[name].dtype == np.float32
        np.testing.assert_array_equal(arrays[name], value.float().numpy())


@pytest.mark.parametrize("container", ["safetensors", "bin"])
def test_open_clip_files_convert_as_the_archive(archive, container, tmp_path, capsys):
    """open_clip's `visual.*` state_dict, as safetensors or `torch.save`: the same arrays."""
    path, visual = archive
    from safetensors.torch import save_file  # noqa: PLC0415

    state = {
        k: v.contiguous()
        for k, v in torch_clip.ClipArchive(visual).state_dict().items()
        if v.is_floating_point()
    }
    weights = tmp_path / f"open_clip_model.{container}"
    if container == "safetensors":
        save_file(state, str(weights))
    else:
        torch.save(state, weights)
    # Nothing in the file says the heads: OpenAI's rule (width // 64) would give this one 1.
    _convert(weights, tmp_path / "x.npz", "--height", 224, "--width", 224)
    assert "heads: 1 (width // 64, OpenAI's rule)" in capsys.readouterr().out
    ours = _convert(weights, tmp_path / "a.npz", "--height", 224, "--width", 224, "--heads", 4)
    assert "heads: 4 (--heads)" in capsys.readouterr().out
    reference = _convert(path, tmp_path / "b.npz", "--height", 224, "--width", 224)
    a, arch_a = clip_pretrained.read_npz(str(ours))
    b, arch_b = clip_pretrained.read_npz(str(reference))
    assert arch_a == arch_b and a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


# ------------------------------------------------------------------------------ Hugging Face


def _hf_vision_config(**overrides):
    transformers = pytest.importorskip("transformers")
    fields = dict(
        hidden_size=WIDTH,
        intermediate_size=4 * WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        image_size=224,
        patch_size=PATCH,
        projection_dim=OUT,
    )
    return transformers.CLIPVisionConfig(**{**fields, **overrides})


def _hf_tokens(model, images, projection=None):
    """transformers' encoder with `post_layernorm` (and the projection) on every token. (In
    transformers 5 a `CLIPVisionModel` is itself the vision transformer; a `CLIPModel` holds one
    as `vision_model`.)"""
    vision_model = getattr(model, "vision_model", model)
    with torch.no_grad():
        hidden = vision_model(
            pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2)
        ).last_hidden_state
        tokens = vision_model.post_layernorm(hidden)
        projected = None if projection is None else projection(tokens).numpy()
    return tokens.numpy(), projected


def _saved_and_converted(model, tmp_path, capsys):
    """`model.save_pretrained` (transformers' `model.safetensors`) converted for 224x224: the
    `.npz` and what the converter printed."""
    model.save_pretrained(tmp_path / "hf")
    safetensors = tmp_path / "hf" / "model.safetensors"
    npz = _convert(safetensors, tmp_path / "clip.npz", "--height", 224, "--width", 224)
    return npz, capsys.readouterr().out


def test_hugging_face_clip_vision_model_every_token(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    model = torch_clip.randomize_(transformers.CLIPVisionModel(_hf_vision_config()), 3).eval()
    npz, printed = _saved_and_converted(model, tmp_path, capsys)
    assert "Hugging Face CLIP safetensors file" in printed
    assert "heads: 4 (config.json)" in printed and "no projection" in printed

    module, variables = clip_pretrained.from_npz(str(npz))
    images = _images(224, 224, seed=4)
    ours = module.apply(variables, images)
    tokens, _ = _hf_tokens(model, images)
    assert _max_diff(ours.tokens, tokens) < ATOL

    # transformers 4 wrote the same model under `vision_model.`, with a `position_ids` buffer.
    from safetensors.torch import save_file  # noqa: PLC0415

    old = {f"vision_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    old["vision_model.embeddings.position_ids"] = torch.arange(197)[None]
    (tmp_path / "v4").mkdir()
    save_file(old, str(tmp_path / "v4" / "model.safetensors"))
    npz_v4 = _convert(
        tmp_path / "v4" / "model.safetensors",
        tmp_path / "v4.npz",
        "--height",
        224,
        "--width",
        224,
        "--heads",
        4,
    )
    assert "ignored 1 arrays" in capsys.readouterr().out
    a, b = clip_pretrained.read_npz(str(npz)), clip_pretrained.read_npz(str(npz_v4))
    assert a[1] == b[1] and a[0].keys() == b[0].keys()
    for name in a[0]:
        np.testing.assert_array_equal(a[0][name], b[0][name])


def test_hugging_face_clip_model_every_token_and_projection(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=100,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
    )
    config = transformers.CLIPConfig(
        text_config=text, vision_config=_hf_vision_config().to_dict(), projection_dim=OUT
    )
    model = torch_clip.randomize_(transformers.CLIPModel(config), 5).eval()
    npz, printed = _saved_and_converted(model, tmp_path, capsys)
    assert "output 32" in printed and "ignored" in printed

    module, variables = clip_pretrained.from_npz(str(npz))
    images = _images(224, 224, seed=6)
    ours = module.apply(variables, images)
    tokens, projected = _hf_tokens(model.vision_model, images, model.visual_projection)
    assert _max_diff(ours.tokens, tokens) < ATOL
    assert _max_diff(ours.projected, projected) < ATOL


def test_reference_is_transformers_clip_in_openais_names():
    """tests/torch_clip.py, OpenAI's structure written from its facts, equals `transformers`'
    independent implementation once q, k and v are stacked into `in_proj`."""
    transformers = pytest.importorskip("transformers")
    hf = torch_clip.randomize_(transformers.CLIPVisionModel(_hf_vision_config()), 7).eval()
    hf_state = {k.removeprefix("vision_model."): v for k, v in hf.state_dict().items()}
    from vreid_jax.models.convert_clip import _hf_sources  # noqa: PLC0415

    visual = _reference()
    state = {}
    for name in visual.state_dict():
        if name == "proj":
            state[name] = visual.state_dict()[name]  # CLIPVisionModel has none
            continue
        state[name] = torch.cat([hf_state[k] for k in _hf_sources(name)])
    visual.load_state_dict(state)
    images = _images(224, 224, seed=8)
    tokens, _ = _torch_tokens(visual, images)
    assert _max_diff(tokens, _hf_tokens(hf, images)[0]) < 1e-5


# ------------------------------------------------------------------------------ errors


def _openai_state(visual):
    return {
        k: v.contiguous()
        for k, v in torch_clip.ClipArchive(visual).state_dict().items()
        if v.is_floating_point()
    }


def _bad_files(tmp_path):
    from safetensors.torch import save_file  # noqa: PLC0415

    state = _openai_state(_reference())
    cases = {}

    def write(name, content, saver=save_file):
        path = tmp_path / name
        saver(content, str(path))
        return path

    key = "visual.transformer.resblocks.1.attn.in_proj_weight"
    cases["a wrong shape"] = (
        write("wrong.safetensors", state | {key: torch.zeros(192, 60)}),
        rf"key '{key}' has shape \(192, 60\), but a CLIP ViT of width 64.* needs \(192, 64\)",
    )
    missing = dict(state)
    missing.pop("visual.ln_post.bias")
    cases["a missing key"] = (
        write("missing.safetensors", missing),
        r"no key 'visual\.ln_post\.bias'",
    )
    extra = state | {"visual.transformer.resblocks.0.attn.bias_k": torch.zeros(1, 1, 64)}
    cases["an unknown key"] = (
        write("extra.safetensors", extra),
        r"key 'visual\.transformer\.resblocks\.0\.attn\.bias_k' is not part of a CLIP ViT",
    )
    cases["an unknown layout"] = (
        write("resnet.safetensors", {"conv1.weight": torch.zeros(8, 3, 7, 7)}),
        r"not a CLIP ViT image encoder: expected OpenAI/open_clip keys.*first keys: 'conv1\.weight'",
    )
    resnet_clip = {"visual.conv1.weight": torch.zeros(32, 3, 3, 3)}
    resnet_clip["visual.attnpool.c_proj.weight"] = torch.zeros(4, 4)
    cases["a ResNet CLIP"] = (write("rn50.safetensors", resnet_clip), "a ResNet CLIP")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a weights file")
    cases["garbage"] = (
        garbage,
        "not a TorchScript archive, a torch state_dict or a safetensors file that can be read",
    )
    corrupt = tmp_path / "corrupt.pt"
    with zipfile.ZipFile(corrupt, "w") as archive:  # TorchScript's shape, none of its records
        archive.writestr("corrupt/constants.pkl", b"")
    cases["a corrupt archive"] = (
        corrupt,
        r"not a TorchScript archive.* that can be read \(RuntimeError",
    )
    cases["a list"] = (write("list.bin", [1, 2], torch.save), "expected a state_dict.*got list")
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "a wrong shape",
        "a missing key",
        "an unknown key",
        "an unknown layout",
        "a ResNet CLIP",
        "garbage",
        "a corrupt archive",
        "a list",
    ],
)
def test_convert_rejects_what_is_not_a_clip_vit(case, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    weights, message = _bad_files(inputs)[case]
    out_dir = tmp_path / "out"
    with pytest.raises(SystemExit, match=rf"^error: .*{weights.name}: {message}"):
        _convert(weights, out_dir / "clip.npz", "--heads", 4)
    assert not out_dir.exists()  # nothing written, no temporary left


def test_convert_names_the_hugging_face_key(tmp_path):
    from safetensors.torch import save_file  # noqa: PLC0415

    transformers = pytest.importorskip("transformers")
    state = transformers.CLIPVisionModel(_hf_vision_config()).state_dict()
    key = "encoder.layers.1.self_attn.k_proj.weight"
    state[key] = torch.zeros(64, 32)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        SystemExit,
        match=rf"model\.safetensors: key '{key}' has shape \(64, 32\).* needs \(64, 64\)",
    ):
        _convert(tmp_path / "model.safetensors", tmp_path / "out" / "clip.npz", "--heads", 4)
    assert not (tmp_path / "out").exists()


def test_convert_asks_for_heads_where_no_rule_applies(tmp_path):
    from safetensors.torch import save_file  # noqa: PLC0415

    visual = torch_clip.VisionTransformer((14, 14), PATCH, 48, 1, 4, OUT)
    save_file(_openai_state(visual), str(tmp_path / "w48.safetensors"))
    with pytest.raises(SystemExit, match="width 48 is not a multiple of 64.*pass --heads"):
        _convert(tmp_path / "w48.safetensors", tmp_path / "clip.npz")
    _convert(tmp_path / "w48.safetensors", tmp_path / "clip.npz", "--heads", 4)


def test_convert_rejects_heads_the_file_contradicts(archive, tmp_path):
    path, _ = archive
    with pytest.raises(SystemExit, match="--heads 8, but the TorchScript archive says 4"):
        _convert(path, tmp_path / "clip.npz", "--heads", 8)
    assert not (tmp_path / "clip.npz").exists()


# ------------------------------------------------------------------------------ loading


class _EncoderWithHead(nn.Module):
    """The encoder inside a model, beside a head the weights file knows nothing about."""

    @nn.compact
    def __call__(self, images):
        tokens = clip_vit.ClipVisionTransformer(
            WIDTH, LAYERS, HEADS, PATCH, OUT, name="image_encoder"
        )(images)
        return nn.Dense(5, name="head")(tokens.projected[:, 0]), tokens


ARCHITECTURE = clip_pretrained.ClipVitArchitecture(WIDTH, LAYERS, HEADS, PATCH, OUT, (4, 2))


def _model_variables():
    model = _EncoderWithHead()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 32, 3)))
    return model, jax.tree.map(np.asarray, variables)


def test_load_into_fills_the_encoder_inside_a_model_and_keeps_the_rest(archive, tmp_path):
    path, _ = archive
    npz = _convert(path, tmp_path / "clip.npz", "--height", 64, "--width", 32)
    model, variables = _model_variables()
    loaded = clip_pretrained.load_into(
        variables, str(npz), ARCHITECTURE, path=("params", "image_encoder")
    )

    # Every encoder leaf is the file's, the head is exactly its init.
    module, alone = clip_pretrained.from_npz(str(npz))
    flat, before = traverse_util.flatten_dict(loaded), traverse_util.flatten_dict(variables)
    file_leaves = traverse_util.flatten_dict(alone["params"])
    assert flat.keys() == before.keys()
    for key, value in flat.items():
        if key[1] == "image_encoder":
            np.testing.assert_array_equal(value, file_leaves[key[2:]])
        else:
            np.testing.assert_array_equal(value, before[key])
    # Through the model: the encoder's tokens are the file's encoder's, the head computes on them.
    images = _images(64, 32, seed=9)
    logits, tokens = model.apply(loaded, images)
    np.testing.assert_allclose(tokens.projected, module.apply(alone, images).projected, atol=1e-6)
    assert np.abs(np.asarray(logits)).min() > 0


@pytest.mark.parametrize(
    "convert_args, architecture, message",
    [
        (
            ("--height", 224, "--width", 224),
            ARCHITECTURE,
            r"grid \(14, 14\) in the file, \(4, 2\) in the model\. Convert the original file "
            r"for 64x32 inputs: .*--height 64 --width 32",
        ),
        (
            ("--height", 64, "--width", 32),
            clip_pretrained.ClipVitArchitecture(WIDTH, LAYERS, 8, PATCH, OUT, (4, 2)),
            "heads 4 in the file, 8 in the model",
        ),
        (
            ("--height", 64, "--width", 32),
            clip_pretrained.ClipVitArchitecture(WIDTH, 3, HEADS, PATCH, OUT, (4, 2)),
            "layers 2 in the file, 3 in the model",
        ),
    ],
)
def test_load_into_checks_the_configured_encoder(
    archive, convert_args, architecture, message, tmp_path
):
    path, _ = archive
    npz = _convert(path, tmp_path / "clip.npz", *convert_args)
    _, variables = _model_variables()
    with pytest.raises(
        clip_pretrained.PretrainedWeightsError, match=r"clip\.npz: the file holds .*" + message
    ):
        clip_pretrained.load_into(
            variables, str(npz), architecture, path=("params", "image_encoder")
        )


def test_load_into_keeps_the_init_of_a_projection_the_file_lacks(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = torch_clip.randomize_(transformers.CLIPVisionModel(_hf_vision_config()), 3)
    model.save_pretrained(tmp_path / "hf")
    npz = _convert(
        tmp_path / "hf" / "model.safetensors", tmp_path / "clip.npz", "--height", 64, "--width", 32
    )
    _, variables = _model_variables()
    loaded = clip_pretrained.load_into(
        variables, str(npz), ARCHITECTURE, path=("params", "image_encoder")
    )
    encoder, before = loaded["params"]["image_encoder"], variables["params"]["image_encoder"]
    np.testing.assert_array_equal(encoder["proj"], before["proj"])
    np.testing.assert_array_equal(
        encoder["class_embedding"], model.embeddings.class_embedding.detach().numpy()
    )


def test_a_resnet_npz_is_not_a_clip_file(tmp_path):
    np.savez(tmp_path / "resnet50.npz", **{"conv1.weight": np.zeros((8, 3, 7, 7), np.float32)})
    with pytest.raises(clip_pretrained.PretrainedWeightsError, match="not a CLIP ViT converted by"):
        clip_pretrained.read_npz(str(tmp_path / "resnet50.npz"))


def test_every_name_maps_to_a_distinct_leaf_and_back():
    module = ARCHITECTURE.encoder()
    target = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 64, 32, 3)))["params"]
    shapes = clip_pretrained.expected_shapes(ARCHITECTURE)
    paths = [clip_pretrained.flax_location(name)[0] for name in shapes]
    assert len(set(paths)) == len(paths)
    assert set(paths) == set(traverse_util.flatten_dict(target))
