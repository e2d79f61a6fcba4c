//! kubernetes-validate from PyPI, installed on first use into a venv under `.herald/`.

use std::path::PathBuf;
use std::process::Command;

use super::repo;

/// kubernetes-validate (PyPI) bundles the Kubernetes JSON schemas of every release from 1.25
/// on, so it validates offline; pinned, with its dependencies, in a venv under `.herald/`.
const VALIDATOR: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "attrs==26.1.0",
    "importlib_resources==7.1.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "packaging==26.4",
    "PyYAML==6.0.4",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "typing_extensions==4.16.0",
];
/// pip, run from its wheel, so a python3 without pip or ensurepip (Debian's) can install too.
const PIP: &str = "24.3.1";

/// Makes the venv at argv[1] with the requirements that follow, using pip from its wheel:
/// `python3 -m pip download` fetches that wheel when pip is there (so its index and proxy
/// settings apply), else PyPI's JSON API does.
const INSTALL: &str = r#"
import glob, json, os, shutil, subprocess, sys, tempfile, urllib.parse, urllib.request, venv
dest, pip_version, *requirements = sys.argv[1:]
venv.EnvBuilder(with_pip=False, clear=True).create(dest)
scratch = tempfile.mkdtemp(dir=os.path.dirname(dest))
pip = f"pip=={pip_version}"
got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                      "-q", "-d", scratch, pip])
if got.returncode != 0:
    print(f"pip download failed; fetching {pip} from PyPI directly", file=sys.stderr)
    index = "https://pypi.org/pypi/pip/json"
    with urllib.request.urlopen(index, timeout=60) as r:
        files = json.load(r)["releases"][pip_version]
    wheel = next(f for f in files if f["filename"].endswith(".whl"))
    # A mirror may answer with a URL relative to the index.
    with urllib.request.urlopen(urllib.parse.urljoin(index, wheel["url"]), timeout=300) as r:
        with open(os.path.join(scratch, wheel["filename"]), "wb") as out:
            out.write(r.read())
[wheel] = glob.glob(os.path.join(scratch, "pip-*.whl"))
python = os.path.join(dest, "bin", "python")
subprocess.run([python, os.path.join(wheel, "pip"), "install", "-q", "--no-deps",
                "--disable-pip-version-check", "--only-binary=:all:", *requirements], check=True)
shutil.rmtree(scratch)
"#;

/// The venv's python with kubernetes-validate, installed on first use. A marker file written
/// last names what was installed, so an interrupted or older install is redone.
pub(super) fn kubernetes_validate() -> PathBuf {
    let version = VALIDATOR[0].split_once("==").unwrap().1;
    let venv = repo()
        .join(".herald")
        .join(format!("kubernetes-validate-{version}"));
    let python = venv.join("bin/python");
    let marker = venv.join("installed");
    let wanted = VALIDATOR.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|got| got == wanted) {
        return python;
    }
    eprintln!(
        "deploy: installing {} into {} (once)",
        VALIDATOR.join(" "),
        venv.display()
    );
    std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
    let status = Command::new("python3")
        .args(["-c", INSTALL])
        .arg(&venv)
        .arg(PIP)
        .args(VALIDATOR)
        .status()
        .expect("python3 runs (the tests need it, as xtask does)");
    assert!(status.success(), "installing kubernetes-validate failed");
    std::fs::write(&marker, wanted).unwrap();
    python
}
