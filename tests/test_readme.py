"""The README's config table lists every knob of the schema, with its current doc."""

from pathlib import Path

from sae_sweep.config.reference import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_table_is_current():
    text = README.read_text()
    start, end = "<!-- config-table:start -->\n", "<!-- config-table:end -->"
    table = text[text.index(start) + len(start) : text.index(end)].strip()
    assert table == markdown_table().strip(), (
        "README config table is stale: regenerate it with `python -m sae_sweep.config.reference`"
    )
