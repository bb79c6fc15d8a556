"""A folder source reads no file through a symbolic link that leaves the folder or loops; each
such link is a quarantine row with its reason and is counted as skipped."""

from __future__ import annotations

import os

from tasks.data.catalog import SourceSpec
from tasks.data.ingest import ingest


def _folder_source(path, member="*.txt") -> SourceSpec:
    return SourceSpec(
        name="notes",
        domain="notes",
        factual=False,
        license="CC0",
        adapter="txt_folder",
        path=str(path),
        member=member,
    )


def test_links_out_of_the_folder_and_loops_are_skipped_with_a_reason(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("a private file outside the source folder")
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("first document")
    (root / "sub" / "b.txt").write_text("second document")
    os.symlink(outside / "secret.txt", root / "secret.txt")  # leaves the folder
    os.symlink("../../outside", root / "sub" / "out")  # a folder outside
    os.symlink("loop.txt", root / "loop.txt")  # points at itself
    os.symlink("..", root / "sub" / "up.txt")  # a folder that contains it
    os.symlink("gone.txt", root / "dangling.txt")  # points nowhere
    os.symlink("sub/b.txt", root / "alias.txt")  # stays inside: read
    docs, quarantine, stats = ingest([_folder_source(root)], tmp_path)

    assert sorted(docs["text"]) == ["first document", "second document", "second document"]
    assert "a private file" not in " ".join(docs["text"]) + " ".join(quarantine["payload"])
    errors = dict(zip(quarantine["location"], quarantine["error"]))
    real_root = root.resolve()
    assert errors == {
        f"{root}!dangling.txt": f"{root}!dangling.txt: skipped: broken symbolic link "
        f"(-> gone.txt: No such file or directory)",
        f"{root}!loop.txt": f"{root}!loop.txt: skipped: symbolic link loop (-> loop.txt)",
        f"{root}!secret.txt": f"{root}!secret.txt: skipped: symbolic link leaves the source folder "
        f"{real_root} (-> {(outside / 'secret.txt').resolve()})",
        f"{root}!sub/up.txt": f"{root}!sub/up.txt: skipped: symbolic link loop "
        f"(-> .., a folder that contains it)",
    }
    # `sub/out` is skipped too, but `member` '*.txt' does not select it: not a row
    assert stats["skipped_notes"] == stats["files_skipped"] == 4
    assert (stats["rows_in"], stats["rows_kept"], stats["rows_quarantined"]) == (7, 3, 4)


def test_a_folder_link_that_leaves_the_folder_is_a_skipped_row_when_selected(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("outside")
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.txt").write_text("inside")
    os.symlink(outside, root / "elsewhere")
    docs, quarantine, stats = ingest([_folder_source(root, member="*")], tmp_path)
    assert docs["text"].to_list() == ["inside"]
    assert quarantine["error"].to_list() == [
        f"{root}!elsewhere: skipped: symbolic link leaves the source folder {root.resolve()} "
        f"(-> {outside.resolve()})"
    ]
    assert stats["files_skipped"] == 1 and stats["rows_in"] == 2
