"""Who may label: the annotators file read by the annotation page.

```yaml
annotators:
  - {id: alice, token: "a long random string"}
  - {id: bob, token: "another long random string"}
```
A token is the only credential: whoever holds it labels as that id (no password store). Make
one with `python -c "import secrets; print(secrets.token_urlsafe(24))"` and hand it over in
private; remove a line (and restart the page) to withdraw it.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

MIN_TOKEN_CHARS = 16
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EXAMPLE_FILE = "configs/annotators.example.yaml"


def parse_annotators(data, source: str = "annotators") -> dict[str, str]:
    """token -> annotator id from the parsed YAML; ValueError naming `source` and the entry."""
    if not isinstance(data, dict) or not isinstance(data.get("annotators"), list):
        raise ValueError(f"{source}: expected a mapping with a list `annotators: [{{id, token}}]`")
    tokens: dict[str, str] = {}
    seen_ids: set[str] = set()
    for n, entry in enumerate(data["annotators"]):
        where = f"{source}: annotators[{n}]"
        if not isinstance(entry, dict) or set(entry) != {"id", "token"}:
            raise ValueError(f"{where}: expected exactly the keys id and token")
        annotator, token = entry["id"], entry["token"]
        if not isinstance(annotator, str) or not ID_PATTERN.match(annotator):
            raise ValueError(
                f"{where}: id {annotator!r} must be 1-64 letters, digits, '_', '.', '-'"
            )
        if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"{where} ({annotator}): the token must be a string of at least "
                f"{MIN_TOKEN_CHARS} characters; make one with "
                'python -c "import secrets; print(secrets.token_urlsafe(24))"'
            )
        if annotator in seen_ids:
            raise ValueError(f"{where}: id {annotator!r} appears twice")
        if token in tokens:
            raise ValueError(f"{where} ({annotator}): the same token as {tokens[token]!r}")
        seen_ids.add(annotator)
        tokens[token] = annotator
    if not tokens:
        raise ValueError(f"{source}: the annotators list is empty")
    return tokens


def load_annotators(path: str | Path) -> dict[str, str]:
    """token -> annotator id from a YAML file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"annotators file {path} not found: copy {EXAMPLE_FILE} to {path}, give each "
            "person a long random token, and pass it with --annotators"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    return parse_annotators(data, str(path))
