"""Sweep files and variant presets: every sweep launches exactly its intended jobs, each a
valid config in its own folder; plus the pure pieces (grid, skip/resume policy, GPU
assignment, end table) on small inputs."""

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # what users know
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

from sae_sweep.config import ConfigError
from sae_sweep.config.schema import Config, job_config
from sae_sweep.main import CONF_DIR  # also registers schemas, resolvers and sweeps
from sae_sweep.models import architecture, validate
from sae_sweep.sweep import available_sweeps
from sae_sweep.sweep.bookkeeping import table
from sae_sweep.sweep.planning.grid import batches, grid_axes, grid_jobs, param_lines
from sae_sweep.sweep.running import policy
from sae_sweep.sweep.running.task import resolved_config

VARIANTS = sorted(p.stem for p in (CONF_DIR / "variant").glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def _hydra():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def _compose(*overrides, hydra=False):
    return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def _grid(sweep: str, *cmdline: str) -> dict[str, list[str]]:
    parsed = OverridesParser.create().parse_overrides(list(cmdline))
    fixed = [line for line, o in zip(cmdline, parsed, strict=True) if not o.is_sweep_override()]
    cfg = _compose(f"+sweep={sweep}", *fixed, hydra=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    return grid_axes(param_lines(params, [f"+sweep={sweep}", *cmdline]))


def _jobs(sweep: str, *cmdline: str, shorten: tuple[str, ...] = ()) -> list[list[str]]:
    """The override lists the basic sweeper launches for `+sweep=<sweep> <cmdline>`; the
    axes in `shorten` keep their first two values (composing a job takes a while)."""
    return grid_jobs({k: v[:2] if k in shorten else v for k, v in _grid(sweep, *cmdline).items()})


def _job_config(overrides):
    cfg = _compose(*overrides, hydra=True)
    subdir = cfg.hydra.sweep.subdir
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_object(cfg), subdir


def test_sweeps_exist():
    assert {"gated_penalty_ablation", "recipe_ablation", "architecture", "quick"} <= set(
        available_sweeps()
    )


@pytest.mark.parametrize("sweep", ["gated_penalty_ablation", "recipe_ablation", "architecture",
                                   "quick"])  # fmt: skip
def test_every_job_of_every_sweep_is_valid_and_has_its_own_folder(sweep):
    # every variant and axis in full; two lambdas and two seeds show they name the folder
    jobs = _jobs(sweep, shorten=("lambda_multiplier", "seed"))
    folders = set()
    for overrides in jobs:
        cfg, subdir = _job_config(overrides)
        validate(cfg)  # no meaningless combination is launched
        # no fixed W&B group: each launch puts its jobs in the sweep instance's (sweep.json's id)
        assert cfg.sweep == sweep and cfg.logger.group is None
        assert cfg.penalty.coefficient == pytest.approx(
            cfg.lambda_scale * cfg.lambda_multiplier**cfg.lambda_exponent
        )
        assert cfg.sae.encoder_init_transpose or sweep == "recipe_ablation"
        folders.add(subdir)
    assert len(folders) == len(jobs), "two jobs of the sweep would share a folder"


def test_gated_penalty_ablation_launches_exactly_the_design():
    grid = _grid("gated_penalty_ablation")
    jobs = _jobs("gated_penalty_ablation")
    assert len(jobs) == len({tuple(sorted(j)) for j in jobs})
    seen = set()
    for overrides in _jobs("gated_penalty_ablation", shorten=("lambda_multiplier", "seed")):
        cfg, _ = _job_config(overrides)
        pen, tr = cfg.penalty, cfg.train
        key = (cfg.variant, cfg.lambda_multiplier, cfg.seed)
        seen.add(key)
        assert cfg.sae.kind == "gated"
        assert pen.warmup_steps > 0 and cfg.sae.encoder_init_transpose  # like with like
        if cfg.variant == "gated_original":
            assert pen.kind.value == "l1" and tr.unit_norm_decoder and cfg.resample.enabled
            assert cfg.sae.aux_decoder.value == "frozen"
        else:
            assert pen.kind.value == "decoder_norm"
            assert not tr.unit_norm_decoder and not cfg.resample.enabled
            aux, norm = cfg.variant.split("_")[2:]
            assert (cfg.sae.aux_decoder.value, pen.decoder_norm_grad.value) == (aux, norm)
    variants = {v for v, _, _ in seen}
    assert variants == {"gated_original"} | {
        f"gated_dn_{a}_{n}" for a in ("frozen", "trainable") for n in ("live", "detached")
    }
    assert len(grid["lambda_multiplier"]) >= 6 and len(grid["seed"]) >= 2
    assert set(grid) == {"variant", "lambda_multiplier", "seed", "+sweep"}
    assert len(jobs) == 5 * len(grid["lambda_multiplier"]) * len(grid["seed"])


def test_command_line_overrides_narrow_the_grid():
    jobs = _jobs(
        "quick", "variant=gated_original", "lambda_multiplier=1,2", "seed=0", "train.steps=50"
    )
    assert len(jobs) == 2
    cfg, subdir = _job_config(jobs[1])
    assert cfg.train.steps == 50 and cfg.penalty.warmup_steps == 2  # 5% of 50, rounded
    assert subdir == "gated_original/lam2.0_seed0"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_preset_is_valid_alone(variant):
    cfg = OmegaConf.to_object(_compose(f"variant={variant}", "lambda_multiplier=2"))
    validate(cfg)
    assert cfg.variant == variant
    if architecture(cfg.sae.kind).l0_knob == "sae.k":  # TopK: the multiplier sets k, not lambda
        at_one = OmegaConf.to_object(_compose(f"variant={variant}", "lambda_multiplier=1"))
        assert 1 <= cfg.sae.k < at_one.sae.k and cfg.penalty.coefficient == 0
        return
    assert cfg.penalty.coefficient == pytest.approx(2**cfg.lambda_exponent * cfg.lambda_scale)


def test_a_meaningless_override_of_a_variant_is_an_error():
    # the standard SAE's schema has no aux_decoder: composing the preset over it fails
    with pytest.raises((ConfigCompositionException, ConfigError), match="aux_decoder"):
        validate(OmegaConf.to_object(_compose("variant=gated_dn_trainable_live", "sae=standard")))


# ---- the pure pieces -------------------------------------------------------------------


def test_the_grid_is_the_one_hydras_basic_sweeper_launches():
    lines = param_lines({"a": "1,2", "b": "x", "d": "range(0,3)"}, ["a=3,4,5", "c=7", "e=p,q"])
    axes = grid_axes(lines)
    assert axes == {"a": ["3", "4", "5"], "b": ["x"], "d": ["0", "1", "2"], "c": ["7"],
                    "e": ["p", "q"]}  # fmt: skip
    # The command line wins for a key the sweep file sets, and it keeps its place.
    parsed = OverridesParser.create().parse_overrides(lines)
    assert grid_jobs(axes) == BasicSweeper.split_arguments(parsed, None)[0]
    assert batches(grid_jobs(axes), 4) == BasicSweeper.split_arguments(parsed, 4)
    with pytest.raises(ValueError, match="interval"):
        grid_axes(["lr=interval(0.1,1)"])


def _record(tmp_path, config, status=None, ckpt_step=None, metrics_steps=()):
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(config))
    if status:
        (tmp_path / "summary.json").write_text(json.dumps({"status": status}))
    if ckpt_step is not None:
        (tmp_path / "checkpoint").mkdir()
        (tmp_path / "checkpoint" / "meta.json").write_text(json.dumps({"step": ckpt_step}))
    lines = [json.dumps({"step": s}) for s in metrics_steps] + ['{"step": 9']  # torn last line
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))


CFG = {"seed": 0, "train": {"steps": 100}, "logger": {"mode": "offline"}, "device": "auto"}


@pytest.mark.parametrize(
    "status, ckpt, rerun, action",
    [
        (None, None, False, policy.Action.NEW),
        ("done", 100, False, policy.Action.SKIP_DONE),
        ("failed", 50, False, policy.Action.SKIP_FAILED),
        ("failed", 50, True, policy.Action.RERUN),
        ("interrupted", 50, False, policy.Action.RESUME),
        (None, 50, False, policy.Action.RESUME),
    ],
)
def test_policy(tmp_path, status, ckpt, rerun, action):
    _record(tmp_path, CFG, status, ckpt)
    assert policy.decide(tmp_path, CFG, rerun).action == action


def test_policy_ignores_logger_and_device_but_not_knobs(tmp_path):
    _record(tmp_path, CFG, "done", 100)
    other = {**CFG, "logger": {"mode": "disabled"}, "device": "cuda:1"}
    assert policy.decide(tmp_path, other, False).action == policy.Action.SKIP_DONE
    d = policy.decide(tmp_path, {**CFG, "train": {"steps": 200}}, False)
    assert d.action == policy.Action.CONFLICT and "train.steps" in d.reason


def test_a_record_of_another_version_is_not_a_conflict_over_added_or_removed_knobs(tmp_path):
    # Upgrading in the middle of a sweep: the records lack knobs added since (and hold ones
    # removed since); the finished jobs are still this sweep's, not conflicts.
    _record(tmp_path, {**CFG, "train": {"steps": 100, "tf32": False}}, "done", 100)
    newer = {**CFG, "train": {"steps": 100, "matmul_dtype": "tf32"}}
    assert policy.decide(tmp_path, newer, False).action == policy.Action.SKIP_DONE
    d = policy.decide(tmp_path, {**newer, "train": {"steps": 200, "matmul_dtype": "tf32"}}, False)
    assert d.action == policy.Action.CONFLICT and "train.steps" in d.reason


def test_prepare_keeps_the_metrics_up_to_the_checkpoint(tmp_path):
    _record(tmp_path, CFG, "interrupted", 50, metrics_steps=(25, 50, 75))
    d = policy.decide(tmp_path, CFG, False)
    policy.prepare(tmp_path, d)
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [25, 50] and not (tmp_path / "summary.json").exists()


def test_end_table_counts_and_shows_failures(tmp_path):
    rows = [
        {"job": 0, "dir": "a/lam1.0_seed0", "outcome": "done", "l0": 12.0, "launch_id": "L"},
        {"job": 1, "dir": "a/lam2.0_seed0", "outcome": "failed", "launch_id": "L",
         "error": "TrainingDivergedError: the loss became non-finite\nmore"},
        {"job": 2, "dir": "b/lam1.0_seed0", "outcome": "skipped", "launch_id": "L"},
    ]  # fmt: skip
    for r in rows:
        (tmp_path / r["dir"]).mkdir(parents=True)
        (tmp_path / r["dir"] / "job.json").write_text(json.dumps(r))
    got = table.collect(tmp_path, "L")
    assert [r["job"] for r in got] == [0, 1, 2] and table.collect(tmp_path, "other") == []
    text = table.write_table(tmp_path, got, expected=4)
    assert text.startswith("3 jobs: 1 done, 1 failed, 1 skipped, 1 never reported")
    assert "TrainingDivergedError: the loss became non-finite |" in text
    assert json.loads((tmp_path / "jobs.json").read_text())["counts"]["failed"] == 1


def test_launch_options_stay_out_of_the_job_config_and_record():
    """rerun_failed, pack and threads change how a launch runs jobs, not what they train: two
    launches that differ in them reach the same job folders without a conflict."""
    cfg = OmegaConf.to_object(
        _compose("variant=gated_original", "rerun_failed=true", "pack=4", "threads=3")
    )
    assert (cfg.rerun_failed, cfg.pack, cfg.threads) == (True, 4, 3)
    job = job_config(cfg)
    assert type(job) is Config and not hasattr(job, "rerun_failed")
    recorded = resolved_config(cfg)
    assert not {"rerun_failed", "pack", "threads"} & set(recorded)
    plain = resolved_config(OmegaConf.to_object(_compose("variant=gated_original")))
    assert recorded == plain


LAUNCHERS = {
    "basic": "BasicLauncher",
    "joblib": "JoblibLauncher",
    "submitit_local": "LocalLauncher",
    "submitit_slurm": "SlurmLauncher",
    "slurm": "SlurmLauncher",  # conf/hydra/launcher/slurm.yaml
}


@pytest.mark.parametrize("sweep", available_sweeps())
def test_every_launcher_preset_composes_with_every_sweep(sweep):
    """Every sweep file runs with every launcher, through sae-sweep's sweeper."""
    for launcher, target in LAUNCHERS.items():
        cfg = _compose(f"+sweep={sweep}", f"hydra/launcher={launcher}", "pack=4", hydra=True)
        assert cfg.hydra.launcher._target_.endswith(target), (sweep, launcher)
        assert cfg.hydra.sweeper._target_.endswith("SaeSweeper")  # packing + target rounds
        assert cfg.hydra.sweeper.params.variant, sweep
        OmegaConf.to_container(cfg.hydra.launcher, resolve=True)  # every value resolves
    slurm = _compose(f"+sweep={sweep}", "hydra/launcher=slurm", hydra=True).hydra.launcher
    assert slurm.gpus_per_node == 1 and slurm.cpus_per_task == 8 and slurm.signal_delay_s > 0


def test_a_retired_end_of_sweep_option_names_its_new_key(monkeypatch, capsys):
    """The end-of-sweep options moved from `hydra.callbacks.sweep` into the sweeper; an old
    command line stops before anything runs and says which key to write instead."""
    from sae_sweep import main as entry

    argv = ["sae-sweep", "+sweep=quick", "hydra.callbacks.sweep.analysis=false"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as stop:
        entry.main()
    assert "`hydra.callbacks.sweep.analysis` moved: write `hydra.sweeper.analysis`" in str(
        stop.value.code
    )
    assert entry.retired_overrides(["hydra.sweeper.analysis=false", "seed=1"]) == []
