"""Helpers shared by the tests (conftest.py holds the fixtures and the harness set-up)."""


def tiny_config(model="nl3d", **overrides):
    """configs/tiny.py for `model`, with dotted-key overrides such as `{"input.clip_len": 2}`."""
    from configs import tiny  # noqa: PLC0415  (after conftest has set up jax)

    config = tiny.get_config(f"model={model}")
    config.update_from_flattened_dict(overrides)
    return config
