#!/usr/bin/env python3
"""Generates src/api/codec/protobuf/schema.rs: the wire + JSON-shape schema of the Kubernetes built-in types.

Inputs are the upstream Kubernetes staging repositories (Apache-2.0), checked out at one release tag:

    github.com/kubernetes/api                      -> <root>/api
    github.com/kubernetes/apimachinery             -> <root>/apimachinery
    github.com/kubernetes/apiextensions-apiserver  -> <root>/apiextensions-apiserver

Usage: gen_schema.py <root> <tag> > src/api/codec/protobuf/schema.rs

e.g. for each repo: `git -C <clone> archive v0.33.13 | tar x -C <root>/<name>`, then
`python3 tools/gen_schema.py <root> v0.33.13 > src/api/codec/protobuf/schema.rs` (tag v0.33.x = Kubernetes 1.33.x).

Two sources are merged per message:
  * generated.proto (go-to-protobuf output): field numbers, wire types, repeated/map, message types;
  * the Go structs (types*.go): the JSON name (`json:"..."` tag), `omitempty`, pointer-ness and
    anonymous embedding (`json:",inline"`), which decide what encoding/json emits. Fields are matched
    by protobuf field number (the `protobuf:"bytes,N,..."` tag).
"""

import os
import re
import sys

# Packages (relative to <root>) that get into the schema; admission/apidiscovery/imagepolicy are
# never request bodies of the API server and testapigroup is a test fixture.
PACKAGES = [
    "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/runtime",
    "apimachinery/pkg/runtime/schema",
    "apimachinery/pkg/util/intstr",
    "apimachinery/pkg/api/resource",
    "apiextensions-apiserver/pkg/apis/apiextensions/v1",
    "apiextensions-apiserver/pkg/apis/apiextensions/v1beta1",
]
SKIP_API_GROUPS = {"admission", "apidiscovery", "imagepolicy"}

SCALARS = {
    "bool": "Bool",
    "int32": "Int32",
    "int64": "Int64",
    "double": "Double",
    "string": "Str",
    "bytes": "Bytes",
}

MESSAGE_RE = re.compile(r"^message (\w+) \{")
FIELD_RE = re.compile(r"^\s+(optional|repeated|required) (\S+) (\w+) = (\d+);")
MAP_RE = re.compile(r"^\s+map<string, (\S+)> (\w+) = (\d+);")
PACKAGE_RE = re.compile(r"^package ([\w.]+);")
STRUCT_RE = re.compile(r"^type (\w+) struct \{")
NAMED_FIELD_RE = re.compile(r"^\s*(\w+)\s+([^\s`]+)\s+`([^`]*)`")
EMBEDDED_FIELD_RE = re.compile(r"^\s*([^\s`]+)\s+`([^`]*)`")
TAG_RE = re.compile(r'(\w+):"([^"]*)"')


def api_packages(root):
    """All k8s.io/api group/version directories that have a generated.proto."""
    out = []
    api = os.path.join(root, "api")
    for group in sorted(os.listdir(api)):
        if group in SKIP_API_GROUPS:
            continue
        gdir = os.path.join(api, group)
        if not os.path.isdir(gdir):
            continue
        for version in sorted(os.listdir(gdir)):
            if os.path.exists(os.path.join(gdir, version, "generated.proto")):
                out.append(f"api/{group}/{version}")
    return out


def parse_proto(path):
    """Returns (package, {message: {"wrapper": bool, "fields": [(num, label, type, name)]}})."""
    package = None
    messages = {}
    current = None
    comments = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            stripped = line.strip()
            m = PACKAGE_RE.match(line)
            if m:
                package = m.group(1)
                continue
            if stripped.startswith("//"):
                comments.append(stripped)
                continue
            m = MESSAGE_RE.match(line)
            if m:
                wrapper = any("+protobuf.nullable=true" in c for c in comments)
                current = {"wrapper": wrapper, "fields": []}
                messages[m.group(1)] = current
            elif line.startswith("}"):
                current = None
            elif current is not None:
                m = MAP_RE.match(line)
                if m:
                    current["fields"].append((int(m.group(3)), "map", m.group(1), m.group(2)))
                else:
                    m = FIELD_RE.match(line)
                    if m:
                        label = "repeated" if m.group(1) == "repeated" else "one"
                        current["fields"].append((int(m.group(4)), label, m.group(2), m.group(3)))
                    elif stripped and not stripped.startswith("reserved"):
                        sys.exit(f"{path}: unparsed line: {line!r}")
            comments = []
    return package, messages


def parse_go_structs(pkgdir):
    """Returns {struct: [(num, json_name, omitempty, go_type, embedded)]} for fields with protobuf tags."""
    structs = {}
    for name in sorted(os.listdir(pkgdir)):
        if not name.endswith(".go") or name.endswith("_test.go") or name.startswith("zz_generated"):
            continue
        if name == "generated.pb.go":
            continue
        current = None
        with open(os.path.join(pkgdir, name), encoding="utf-8") as f:
            for line in f:
                m = STRUCT_RE.match(line)
                if m:
                    current = []
                    structs[m.group(1)] = current
                    continue
                if current is None:
                    continue
                if line.startswith("}"):
                    current = None
                    continue
                if line.strip().startswith("//"):
                    continue
                m = NAMED_FIELD_RE.match(line)
                embedded = False
                if m:
                    gofield, gotype, tags = m.groups()
                else:
                    m = EMBEDDED_FIELD_RE.match(line)
                    if not m:
                        continue
                    gotype, tags = m.groups()
                    gofield = gotype.lstrip("*").split(".")[-1]
                    embedded = True
                tagmap = dict(TAG_RE.findall(tags))
                if tagmap.get("protobuf", "-") == "-":
                    continue
                num = int(tagmap["protobuf"].split(",")[1])
                jparts = tagmap.get("json", "").split(",")
                jname = jparts[0] or (None if embedded else gofield)
                omitempty = "omitempty" in jparts[1:]
                current.append((num, jname, omitempty, gotype, embedded))
    return structs


def group_name(pkgdir):
    """The API group of a package (`const GroupName = "..."` in register.go), or None."""
    reg = os.path.join(pkgdir, "register.go")
    if not os.path.exists(reg):
        return None
    with open(reg, encoding="utf-8") as f:
        for line in f:
            m = re.match(r'^const GroupName = "(\S*)"', line)
            if m:
                return m.group(1)
    return None


def go_type_aliases(root, pkgdir):
    """{name: (pkgdir, name)} for `type X alias.Y` definitions that copy a struct of another package."""
    out = {}
    for name in sorted(os.listdir(pkgdir)):
        if not name.endswith(".go") or name.endswith("_test.go") or name == "generated.pb.go":
            continue
        with open(os.path.join(pkgdir, name), encoding="utf-8") as f:
            text = f.read()
        imports = {a: p for a, p in re.findall(r'^\s*(\w+) "k8s\.io/([^"]+)"', text, re.M)}
        for tname, alias, target in re.findall(r"^type (\w+) (\w+)\.(\w+)$", text, re.M):
            path = imports.get(alias)
            if path:
                out[tname] = (os.path.join(root, path), target)
    return out


def resolve(typ, package):
    if typ in SCALARS:
        return None
    if typ.startswith("."):
        return typ[1:]
    return f"{package}.{typ}"


def shape(label, is_msg, is_wrapper, go):
    """JSON emission rule, see `Shape` in protobuf.rs."""
    if go is None:
        return "Ptr" if (is_msg and label == "one" and not is_wrapper) else "Omit"
    _, jname, omitempty, gotype, embedded = go
    if label == "one" and is_msg and not is_wrapper:
        if embedded and jname is None:
            return "Inline"
        if gotype.startswith("*"):
            return "Ptr" if omitempty else "Nullable"
        return "Always"
    if label == "one" and not is_msg and SCALAR_OF_TYPE.get(gotype) != "bytes":
        if gotype.startswith("*"):
            return "Ptr" if omitempty else "Nullable"
        return "Omit" if omitempty else "Always"
    # repeated, map, []byte or a named-slice wrapper message
    return "Omit" if omitempty else "Always"


SCALAR_OF_TYPE = {"[]byte": "bytes"}


def main():
    root, tag = sys.argv[1], sys.argv[2]
    pkgs = PACKAGES + api_packages(root)
    messages = {}  # full name -> (wrapper, [(num, label, fulltype|scalar, json, shape)])
    gvs = []
    warnings = []
    raw = []
    for rel in pkgs:
        pkgdir = os.path.join(root, rel)
        package, msgs = parse_proto(os.path.join(pkgdir, "generated.proto"))
        structs = parse_go_structs(pkgdir)
        for tname, (other, target) in go_type_aliases(root, pkgdir).items():
            if tname not in structs and os.path.isdir(other):
                found = parse_go_structs(other).get(target)
                if found is not None:
                    structs[tname] = found
        group = group_name(pkgdir)
        if group is not None:
            gv = f"{group}/{os.path.basename(rel)}" if group else os.path.basename(rel)
            gvs.append((gv, package))
        raw.append((package, msgs, structs))
    wrappers = {f"{p}.{n}" for p, msgs, _ in raw for n, m in msgs.items() if m["wrapper"]}
    for package, msgs, structs in raw:
        for name, msg in msgs.items():
            full = f"{package}.{name}"
            gofields = structs.get(name)
            if gofields is None and msg["fields"]:
                warnings.append(f"no Go struct for {full}")
            by_num = {g[0]: g for g in (gofields or [])}
            order = [g[0] for g in (gofields or [])]
            fields = []
            for num, label, typ, pname in msg["fields"]:
                target = resolve(typ, package)
                go = by_num.get(num)
                if go is None and gofields is not None:
                    warnings.append(f"no Go field for {full}.{pname}")
                if go is not None and go[1] == "-":
                    continue
                jname = pname if go is None else (go[1] or pname)
                sh = shape(label, target is not None, target in wrappers, go)
                fields.append((num, label, target or typ, jname, sh))
            rank = {n: i for i, n in enumerate(order)}
            fields.sort(key=lambda f: (rank.get(f[0], 1 << 20), f[0]))
            messages[full] = (msg["wrapper"], fields)
    names = sorted(messages)
    index = {n: i for i, n in enumerate(names)}
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)

    out = sys.stdout
    out.write(f"//! Wire and JSON-shape schema of the Kubernetes built-in types, staging tag {tag}.\n")
    out.write("//!\n//! GENERATED by tools/gen_schema.py from the generated.proto files and Go types of\n")
    out.write("//! k8s.io/api, k8s.io/apimachinery and k8s.io/apiextensions-apiserver (Apache-2.0). Do not edit.\n\n")
    out.write("use super::Card::{Map, One, Repeated};\n")
    out.write("use super::Shape::{Always, Inline, Nullable, Omit, Ptr};\n")
    out.write("use super::Ty::{Bool, Bytes, Double, Int32, Int64, Msg, Str};\n")
    out.write("use super::{Message, f};\n\n")
    out.write("/// `group/version` (`v1` for core) to protobuf package, sorted.\n")
    out.write("pub(super) static GROUP_VERSIONS: &[(&str, &str)] = &[\n")
    for gv, package in sorted(gvs):
        out.write(f'    ("{gv}", "{package}"),\n')
    out.write("];\n\n")
    out.write("/// Every message, sorted by full name; `Msg(i)` indexes this slice.\n")
    out.write("pub(super) static MESSAGES: &[Message] = &[\n")
    for name in names:
        wrapper, fields = messages[name]
        out.write(f'    Message {{ name: "{name}", wrapper: {str(wrapper).lower()}, fields: &[\n')
        for num, label, typ, jname, sh in fields:
            ty = SCALARS[typ] if typ in SCALARS else f"Msg({index[typ]})"
            card = {"one": "One", "repeated": "Repeated", "map": "Map"}[label]
            out.write(f'        f({num}, "{jname}", {ty}, {card}, {sh}),\n')
        out.write("    ] },\n")
    out.write("];\n")


if __name__ == "__main__":
    main()
