"""The small subset of kustomize that config/kubernetes uses, rendered in Python so the
manifest tests need no kustomize binary: `build()` refuses anything else, so a new
kustomize feature fails the tests loudly instead of being skipped silently
(tests/test_manifests.py also compares with a real `kustomize` where one is on PATH)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]


class KustomizeError(Exception):
    pass


def load_docs(path: Path) -> list[Manifest]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise KustomizeError(f"{path}: not a Kubernetes object: {doc!r:.80}")
    return docs


def kustomization(directory: Path) -> dict[str, Any]:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise KustomizeError(f"{directory}/kustomization.yaml: expected a mapping")
    return data


def _generate_configmap(directory: Path, spec: Mapping[str, Any]) -> Manifest:
    unknown = set(spec) - {"name", "files", "literals", "options", "behavior"}
    if unknown:
        raise KustomizeError(f"configMapGenerator: unsupported keys {sorted(unknown)}")
    data: dict[str, str] = {}
    for entry in spec.get("files", []):
        key, _, path = str(entry).rpartition("=")
        data[key or Path(path).name] = (directory / path).read_text(encoding="utf-8")
    for literal in spec.get("literals", []):
        key, sep, value = str(literal).partition("=")
        if not sep:
            raise KustomizeError(f"configMapGenerator literal without '=': {literal!r}")
        data[key] = value
    options = spec.get("options", {})
    metadata: dict[str, Any] = {"name": spec["name"]}
    for field in ("labels", "annotations"):
        if field in options:
            metadata[field] = dict(options[field])
    manifest: Manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
    manifest["data"] = data
    if not options.get("disableNameSuffixHash", False):
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        manifest["x-hash-suffix"] = digest[:10]
    return manifest


def _strategic_merge(base: Any, patch: Any) -> Any:
    """Strategic merge, enough for pod templates: lists of named objects merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(str(k).startswith("$") for k in patch):
            raise KustomizeError(f"strategic-merge directives are not supported: {patch}")
        out = dict(base)
        for key, value in patch.items():
            out[key] = _strategic_merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list):
        named = all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
        if not named:
            return copy.deepcopy(patch)
        merged = [dict(i) for i in base]
        index = {i["name"]: n for n, i in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                n = index[item["name"]]
                merged[n] = _strategic_merge(merged[n], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _json6902(doc: Manifest, ops: list[dict[str, Any]]) -> Manifest:
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, op["value"])
            elif kind == "replace":
                parent[index] = op["value"]
            elif kind == "remove":
                del parent[index]
            else:
                raise KustomizeError(f"unsupported JSON patch op {kind!r}")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in parent:
                raise KustomizeError(f"JSON patch replaces a missing path {op['path']}")
            parent[last] = op["value"]
        elif kind == "remove":
            del parent[last]
        else:
            raise KustomizeError(f"unsupported JSON patch op {kind!r}")
    return doc


def _matches(doc: Manifest, target: Mapping[str, Any]) -> bool:
    unknown = set(target) - {"kind", "name", "group", "version"}
    if unknown:
        raise KustomizeError(f"patch target: unsupported keys {sorted(unknown)}")
    group, _, version = str(doc["apiVersion"]).rpartition("/")
    actual = {"kind": doc["kind"], "name": doc["metadata"]["name"], "group": group}
    actual["version"] = version
    return all(re.fullmatch(str(want), actual[key]) for key, want in target.items())


def _apply_patches(directory: Path, docs: list[Manifest], patches: list[Any]) -> list[Manifest]:
    for spec in patches:
        unknown = set(spec) - {"path", "patch", "target"}
        if unknown:
            raise KustomizeError(f"patches: unsupported keys {sorted(unknown)}")
        text = (directory / spec["path"]).read_text() if "path" in spec else spec["patch"]
        body = yaml.safe_load(text)
        target = spec.get("target")
        if target is None:
            if not isinstance(body, dict):
                raise KustomizeError("a JSON 6902 patch needs a target")
            target = {"kind": body["kind"], "name": body["metadata"]["name"]}
        hits = [n for n, d in enumerate(docs) if _matches(d, target)]
        if not hits:
            raise KustomizeError(f"patch {spec} matches no resource")
        for n in hits:
            docs[n] = (
                _json6902(docs[n], body)
                if isinstance(body, list)
                else _strategic_merge(docs[n], {k: v for k, v in body.items() if k != "metadata"})
            )
    return docs


def _collect(
    directory: Path, expected_kind: str, components: tuple[Path, ...] = ()
) -> list[Manifest]:
    k = kustomization(directory)
    kind = k.get("kind", "Kustomization")
    if kind != expected_kind:
        raise KustomizeError(f"{directory}: kind {kind}, expected {expected_kind}")
    supported = {"apiVersion", "kind", "resources", "configMapGenerator", "components", "patches"}
    supported.add("images")
    unknown = set(k) - supported
    if unknown:
        raise KustomizeError(f"{directory}: kustomize features not rendered here: {unknown}")
    docs: list[Manifest] = []
    for resource in k.get("resources", []):
        path = directory / resource
        docs += _collect(path, "Kustomization") if path.is_dir() else load_docs(path)
    for spec in k.get("configMapGenerator", []):
        generated = _generate_configmap(directory, spec)
        behavior = spec.get("behavior", "create")
        same = [
            n for n, d in enumerate(docs) if (d["kind"], name_of(d)) == ("ConfigMap", spec["name"])
        ]
        if behavior == "create":
            if same:
                raise KustomizeError(f"ConfigMap {spec['name']} generated twice")
            docs.append(generated)
        elif behavior in ("merge", "replace") and same:
            old = docs[same[0]]
            if behavior == "merge":
                generated["data"] = {**old.get("data", {}), **generated["data"]}
            docs[same[0]] = generated
        else:
            raise KustomizeError(f"configMapGenerator behavior {behavior!r} for {spec['name']}")
    for component in [*(directory / c for c in k.get("components", [])), *components]:
        docs = _apply_component(component, docs)
    docs = _apply_patches(directory, docs, k.get("patches", []))
    return _set_images(docs, k.get("images", []))


def split_image(image: str) -> tuple[str, str]:
    """`name[:tag]` → (name, ':tag' or ''); a registry's :port is part of the name."""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if "@" in image:
        raise KustomizeError(f"image digests are not rendered here: {image}")
    return (image[:colon], image[colon:]) if colon > slash else (image, "")


def _set_images(docs: list[Manifest], images: list[Mapping[str, Any]]) -> list[Manifest]:
    """kustomize's `images:` transformer: newName and newTag for containers of that image."""
    for spec in images:
        unknown = set(spec) - {"name", "newName", "newTag"}
        if unknown:
            raise KustomizeError(f"images: unsupported keys {sorted(unknown)}")
        hits = 0
        for doc in docs:
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, tag = split_image(str(container["image"]))
                if name == spec["name"]:
                    new_tag = f":{spec['newTag']}" if "newTag" in spec else tag
                    container["image"] = str(spec.get("newName", name)) + new_tag
                    hits += 1
        if not hits:
            raise KustomizeError(f"images: no container runs {spec['name']}")
    return docs


def _apply_component(directory: Path, docs: list[Manifest]) -> list[Manifest]:
    k = kustomization(directory)
    if k.get("kind") != "Component":
        raise KustomizeError(f"{directory}: not a kustomize Component")
    unknown = set(k) - {"apiVersion", "kind", "resources", "patches"}
    if unknown:
        raise KustomizeError(f"{directory}: component features not rendered here: {unknown}")
    own = [doc for r in k.get("resources", []) for doc in load_docs(directory / r)]
    return _apply_patches(directory, docs + own, k.get("patches", []))


def name_of(doc: Manifest) -> str:
    return str(doc["metadata"]["name"])


def _rename_generated(docs: list[Manifest]) -> list[Manifest]:
    """Give generated ConfigMaps their hash suffix and rewrite the references to them."""
    renamed: dict[str, str] = {}
    for doc in docs:
        suffix = doc.pop("x-hash-suffix", None)
        if suffix:
            old = doc["metadata"]["name"]
            doc["metadata"]["name"] = renamed[old] = f"{old}-{suffix}"
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec")
        if not spec:
            continue
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                name = volume["configMap"]["name"]
                volume["configMap"]["name"] = renamed.get(name, name)
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    name = source["configMapRef"]["name"]
                    source["configMapRef"]["name"] = renamed.get(name, name)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    ref["name"] = renamed.get(ref["name"], ref["name"])
    return docs


def build(directory: Path, components: tuple[Path, ...] = ()) -> list[Manifest]:
    """`kustomize build directory`, plus `components` as an overlay would add them."""
    return _rename_generated(_collect(directory, "Kustomization", components))
