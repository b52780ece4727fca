"""The README's config table lists every knob of the schema, with its current doc."""

from pathlib import Path

from sae_sweep.config.reference import END, START, markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_table_is_current():
    text = README.read_text()
    table = text[text.index(START) + len(START) : text.index(END)].strip()
    assert table == markdown_table().strip(), (
        "README config table is stale: regenerate it with "
        "`python -m sae_sweep.config.reference --update README.md`"
    )
