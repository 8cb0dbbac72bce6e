#!/usr/bin/env python3
"""Write an OCI image layout tar by hand (no registry, no docker).

oci-image.py OUT.tar IMAGE_SPEC [IMAGE_SPEC...]
IMAGE_SPEC is a JSON object:
  {"name": "localhost/busybox:1",
   "layers": [{"busybox": "/bin/busybox"}, {"file": "/path/bin", "dest": "/usr/local/bin/x"}],
   "entrypoint": [...], "cmd": [...], "env": [...], "workdir": "/", "user": ""}
Layer kinds: {"busybox": PATH} makes /bin/busybox, a /bin symlink per applet,
/etc/passwd, /etc/group, /tmp, /root; {"file": SRC, "dest": DEST} adds one file (mode 0755).
The tar holds one manifest per image, each named by the
io.containerd.image.name annotation, as `ctr images import` expects.
"""
import hashlib, io, json, os, subprocess, sys, tarfile

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _ti(name, kind, mode, size=0, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.linkname = kind, mode, size, linkname
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "root", "root"
    return ti


def _dirs(tf, seen, path):
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in seen:
            seen.add(d)
            tf.addfile(_ti(d, tarfile.DIRTYPE, 0o755))


def _add_bytes(tf, seen, path, data, mode):
    _dirs(tf, seen, path)
    tf.addfile(_ti(path.strip("/"), tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))


def busybox_layer(bb):
    applets = subprocess.run([bb, "--list-full"], check=True, capture_output=True, text=True).stdout.split()
    buf, seen = io.BytesIO(), set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d, m in (("bin", 0o755), ("sbin", 0o755), ("usr", 0o755), ("usr/bin", 0o755),
                     ("usr/sbin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777),
                     ("var", 0o755), ("var/tmp", 0o1777), ("proc", 0o755), ("sys", 0o755),
                     ("dev", 0o755), ("run", 0o755)):
            seen.add(d)
            tf.addfile(_ti(d, tarfile.DIRTYPE, m))
        with open(bb, "rb") as f:
            _add_bytes(tf, seen, "bin/busybox", f.read(), 0o755)
        done = {"bin/busybox"}
        for a in applets:  # e.g. bin/sh, usr/bin/env, sbin/ip
            a = a.strip("/")
            if a in done:
                continue
            done.add(a)
            _dirs(tf, seen, a)
            tf.addfile(_ti(a, tarfile.SYMTYPE, 0o777, linkname="/bin/busybox"))
        _add_bytes(tf, seen, "etc/passwd",
                   b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644)
        _add_bytes(tf, seen, "etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        _add_bytes(tf, seen, "etc/hosts", b"127.0.0.1 localhost\n", 0o644)
    return buf.getvalue()


def file_layer(src, dest):
    buf, seen = io.BytesIO(), set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        with open(src, "rb") as f:
            _add_bytes(tf, seen, dest, f.read(), 0o755)
    return buf.getvalue()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, specs = sys.argv[1], [json.loads(s) for s in sys.argv[2:]]
    blobs, manifests, cache = {}, [], {}

    def blob(data):
        d = hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return "sha256:" + d, len(data)

    for spec in specs:
        layers, diff_ids = [], []
        for l in spec["layers"]:
            key = json.dumps(l, sort_keys=True)
            if key not in cache:
                cache[key] = busybox_layer(l["busybox"]) if "busybox" in l else file_layer(l["file"], l["dest"])
            dg, sz = blob(cache[key])
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": dg, "size": sz})
            diff_ids.append(dg)
        cfg = {"Env": spec.get("env", [PATH_ENV]), "WorkingDir": spec.get("workdir", "/")}
        for k, j in (("entrypoint", "Entrypoint"), ("cmd", "Cmd"), ("user", "User")):
            if spec.get(k) is not None:
                cfg[j] = spec[k]
        config = {"created": "1970-01-01T00:00:00Z", "architecture": spec.get("arch", "amd64"), "os": "linux",
                  "config": cfg, "rootfs": {"type": "layers", "diff_ids": diff_ids},
                  "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "e2e/cluster/oci-image.py"}]}
        cdg, csz = blob(json.dumps(config, sort_keys=True).encode())
        man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdg, "size": csz},
               "layers": layers}
        mdg, msz = blob(json.dumps(man, sort_keys=True).encode())
        name = spec["name"]
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdg, "size": msz,
                          "platform": {"architecture": spec.get("arch", "amd64"), "os": "linux"},
                          "annotations": {"io.containerd.image.name": name,
                                          "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        seen = set()
        _add_bytes(tf, seen, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), 0o644)
        _add_bytes(tf, seen, "index.json", json.dumps(index, sort_keys=True).encode(), 0o644)
        for d, data in sorted(blobs.items()):
            _add_bytes(tf, seen, "blobs/sha256/" + d, data, 0o644)
    os.replace(tmp, out)
    for m in manifests:
        print(m["annotations"]["io.containerd.image.name"], m["digest"])


if __name__ == "__main__":
    main()
