"""Reads CRD files with PyYAML, a YAML 1.1 parser like kubectl's and Helm's,
and fails when any enum value or default is not what the schema's type says
(an unquoted `Off` read as false, `True` as true, ...). Run with Debian's
/usr/bin/python3 (python3-yaml, installed by hack/tools/install-lint-tools.sh)."""
import sys

import yaml

TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
         "object": dict, "array": list}


counts = {"enums": 0}


def walk(node, path, problems):
    if isinstance(node, dict):
        t = node.get("type")
        want = TYPES.get(t) if isinstance(t, str) else None
        if isinstance(node.get("enum"), list):
            counts["enums"] += 1
            for v in node["enum"]:
                if want and (not isinstance(v, want) or (want is int and isinstance(v, bool))):
                    problems.append(f"{path}.enum: {v!r} is a {type(v).__name__}, the schema says {t}")
        if "default" in node and want and not isinstance(node["default"], want):
            problems.append(f"{path}.default: {node['default']!r} is not a {node['type']}")
        for k, v in node.items():
            walk(v, f"{path}.{k}", problems)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk(v, f"{path}[{i}]", problems)


def main(paths):
    problems = []
    for p in paths:
        with open(p) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    walk(doc, p, problems)
    enums = counts["enums"]
    if enums == 0:
        problems.append("no enum found: not a LifecyclePolicy CRD?")
    for line in problems:
        print(line)
    print(f"{len(paths)} file(s), {enums} enum(s), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
