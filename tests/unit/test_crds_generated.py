"""The committed CRDs are exactly what the resource models generate."""

from __future__ import annotations

from aikeys import crds
from aikeys.resources import KINDS


def test_committed_crds_match_the_models() -> None:
    for folder in (crds.REPO_CRDS, crds.CHART_CRDS):
        for name, text in crds.files().items():
            committed = (folder / name).read_text()
            assert committed == text, f"{folder}/{name} is out of date: run `make crds`"
    assert crds.main(["--check"]) == 0


def test_every_schema_field_is_described() -> None:
    def walk(node: dict[str, object], where: str) -> None:
        props = node.get("properties")
        if isinstance(props, dict):
            for name, sub in props.items():
                assert isinstance(sub, dict)
                if where + name not in (".metadata",):
                    assert sub.get("description"), f"{where}{name} has no description"
                walk(sub, f"{where}{name}.")
        items = node.get("items")
        if isinstance(items, dict):
            walk(items, where + "[].")

    for kind in KINDS:
        schema = crds.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        walk(schema["properties"]["spec"], f"{kind.kind}.spec.")
        walk(schema["properties"]["status"], f"{kind.kind}.status.")
