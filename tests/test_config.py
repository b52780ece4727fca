"""The Hydra config tree composes, every group validates, and bad input fails by name."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from sae_sweep.config import ConfigError
from sae_sweep.main import CONF_DIR  # also registers the schemas
from sae_sweep.models import GatedSAEConfig, build_sae, validate
from sae_sweep.sweep.planning.packing import member_config


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


VALID = [
    [],
    ["sae=standard", "penalty=l1", "penalty.coefficient=3", "train.steps=2000", "seed=1"],
    ["sae=standard", "penalty=decoder_norm", "penalty.decoder_norm_grad=detached"],
    ["sae=gated", "sae.aux_decoder=trainable", "penalty.decoder_norm_grad=detached"],
    [
        "penalty=l1",
        "train.unit_norm_decoder=true",
        "sae.decoder_init_norm=1.0",
        "resample.enabled=true",
        "logger=disabled",
    ],  # fmt: skip
    ["logger=online", "logger.project=p", "logger.tags=[a,b]"],
]


@pytest.mark.parametrize("overrides", VALID)
def test_valid_configs_compose_and_validate(overrides):
    cfg = OmegaConf.to_object(_compose(*overrides))
    validate(cfg)


def test_every_group_option_composes():
    for group in ("sae", "penalty", "data", "logger"):
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            cfg = _compose(f"{group}={path.stem}")
            # options that need the user's input (e.g. a data path) leave those keys missing
            if not OmegaConf.missing_keys(cfg):
                assert OmegaConf.to_object(cfg) is not None


@pytest.mark.parametrize(
    "overrides, exc",
    [
        (["train.stepz=10"], ConfigCompositionException),  # typo on the command line
        (["train.steps=ten"], ConfigCompositionException),  # wrong type
        # a knob of another architecture: the standard SAE's schema has no aux_decoder
        (["sae=standard", "sae.aux_decoder=frozen"], ConfigCompositionException),
        (["sae=gated", "sae.k=16"], ConfigCompositionException),
    ],
)
def test_unknown_or_mistyped_keys_are_errors(overrides, exc):
    with pytest.raises(exc) as info:
        _compose(*overrides)
    assert overrides[0].split("=")[0].split(".")[-1] in str(info.value) + str(info.value.__cause__)


def test_yaml_typo_is_an_error_not_a_silent_default(tmp_path):
    conf = tmp_path / "conf"
    for item in CONF_DIR.rglob("*.yaml"):
        target = conf / item.relative_to(CONF_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.read_text())
    (conf / "penalty" / "typo.yaml").write_text("defaults:\n  - schema\nkind: l1\ncoeficient: 2\n")
    errors = (ConfigCompositionException, ConfigKeyError, ValidationError)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"), pytest.raises(errors):
        compose(config_name="config", overrides=["penalty=typo"])


def test_an_unknown_architecture_is_named_with_the_registered_ones_and_the_fix():
    cfg = OmegaConf.to_object(_compose("sae.kind=gatd", "train.steps=-1"))
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert "sae.kind='gatd' is not a registered architecture" in message
    assert "batchtopk, gated, jumprelu, matryoshka_batchtopk, standard, topk" in message
    assert "Fix: sae=<one of them>, or register" in message
    assert "train.steps=-1 must be positive" in message  # reported together with the rest


def test_a_record_of_an_earlier_version_types_its_kind_as_the_architecture_name():
    """Configs written when `sae.kind` was an enum hold its plain name: they still load."""
    recorded = {"sae": {"kind": "gated", "aux_decoder": "frozen"}, "data": {"kind": "synthetic"}}
    cfg = member_config(OmegaConf.to_container(_compose()) | recorded)
    assert cfg.sae.kind == "gated" and isinstance(cfg.sae, GatedSAEConfig)
    assert build_sae(cfg.sae, d_in=4, seed=0).kind == "gated"


BAD = [
    (["penalty=l1", "penalty.decoder_norm_grad=live"], "penalty.decoder_norm_grad"),
    (["train.unit_norm_decoder=true", "sae.decoder_init_norm=1.0"], "train.unit_norm_decoder"),
    (["penalty=l1", "train.unit_norm_decoder=true"], "sae.decoder_init_norm"),
    (["sae.aux_decoder=null"], "sae.aux_decoder"),
    (["penalty.decoder_norm_grad=null"], "penalty.decoder_norm_grad"),
    (["penalty.warmup_steps=5000"], "penalty.warmup_steps"),
    (["resample.enabled=true", "resample.at_steps=[0,99999]"], "resample.at_steps"),
    (["train.adam_betas=[0.9]"], "train.adam_betas"),
    (["train.lr_warmup_steps=1900", "train.lr_decay_fraction=0.2"], "train.lr_warmup_steps"),
    (["device=tpu"], "device"),
]


@pytest.mark.parametrize("overrides, key", BAD)
def test_meaningless_combinations_fail_naming_the_key(overrides, key):
    cfg = OmegaConf.to_object(_compose(*overrides))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_unit_norm_with_decoder_norm_allowed_when_explicit():
    cfg = OmegaConf.to_object(
        _compose(
            "train.unit_norm_decoder=true",
            "sae.decoder_init_norm=1.0",
            "train.allow_unit_norm_with_decoder_norm=true",
        )  # fmt: skip
    )
    validate(cfg)


PRECISION_OK = [
    ["train.matmul_dtype=bfloat16"],  # gated: the fused dense kernels, auto stays dense
    ["sae=standard", "penalty=l1", "train.matmul_dtype=float32"],
    ["train.autocast=true", "train.fast_path=false"],  # autocast where the reference loss runs
    ["sae=jumprelu", "train.autocast=true"],  # no fused kernels to lose
]

PRECISION_BAD = [
    (["dtype=bfloat16"], "dtype=bfloat16", "lose every update", "train.matmul_dtype=bfloat16"),
    (["dtype=float16"], "dtype=float16", "overflows the squared error", "dtype=float32"),
    (["train.autocast=true"], "train.autocast=true", "reference loss", "matmul_dtype=bfloat16"),
    (
        ["train.matmul_dtype=bfloat16", "train.sparse_path=on"],
        "train.sparse_path=on",
        "float32 only",
        "train.sparse_path=auto or off",
    ),
    (["sae=topk", "train.matmul_dtype=bfloat16"], "matmul_dtype", "no fused dense", "tf32"),
    (
        ["train.matmul_dtype=bfloat16", "train.fast_path=false"],
        "matmul_dtype",
        "selects the reference loss",
        "train.autocast=true",
    ),
]


@pytest.mark.parametrize("overrides", PRECISION_OK)
def test_safe_precision_settings_validate(overrides):
    validate(OmegaConf.to_object(_compose(*overrides)))


@pytest.mark.parametrize(("overrides", "key", "reason", "fix"), PRECISION_BAD)
def test_unsafe_precision_fails_at_start_with_the_reason_and_the_fix(overrides, key, reason, fix):
    cfg = OmegaConf.to_object(_compose(*overrides))
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value).replace("\n", " ")
    assert key in message and reason in message
    assert fix in message[message.index("Fix:") :]
