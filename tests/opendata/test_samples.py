"""samples: fictional, clearly labelled rows in every standard layout that pass their own validation."""

from __future__ import annotations

import pytest

from society5.core.regions import hokkaido_municipalities
from society5.opendata import layouts, samples, validate


@pytest.mark.parametrize("layout_id", layouts.ids())
@pytest.mark.parametrize("encoding", ["utf-8-sig", "shift_jis"])
def test_every_sample_passes_validation(tmp_path, layout_id: str, encoding: str) -> None:
    path = tmp_path / f"{layout_id}.csv"
    info = samples.write_sample_csv(path, layout_id, 60, encoding)
    assert info["rows"] == 60 and samples.SAMPLE_LABEL in info["title"]
    report = validate.validate_file(path, layout_id)
    assert report.ok and report.warnings == 0, report.problems[:3]
    assert report.total_rows == 60
    assert report.encoding == ("utf-8-sig" if encoding == "utf-8-sig" else "cp932")


@pytest.mark.parametrize("layout_id", layouts.ids())
def test_samples_are_labelled_deterministic_and_in_hokkaido(layout_id: str) -> None:
    rows = samples.sample_rows(layout_id, 25, seed=7)
    assert rows == samples.sample_rows(layout_id, 25, seed=7)
    assert rows != samples.sample_rows(layout_id, 25, seed=8)
    codes = {m.code for m in hokkaido_municipalities()}
    for row in rows:
        assert list(row) == layouts.get(layout_id).column_names
        assert row["備考"] == samples.SAMPLE_LABEL
        assert row["全国地方公共団体コード"] in codes
        if "緯度" in row:
            assert 41.0 <= float(row["緯度"]) <= 45.8 and 139.0 <= float(row["経度"]) <= 146.0


def test_sample_rows_rejects_bad_input() -> None:
    with pytest.raises(layouts.UnknownLayout):
        samples.sample_rows("nope", 1)
    with pytest.raises(ValueError):
        samples.sample_rows("aed", -1)
    assert samples.sample_rows("aed", 0) == []
