"""Fetch and cache the binaries the platform runs, from the registries only.

* Kafka broker jars: Maven Central (``org.apache.kafka:kafka_2.13`` + a log4j2 binding),
* Spark's Kafka source: Maven Central, versions read off the installed pyspark,
* MinIO: ``go install`` of a pinned pseudo-version through the Go module proxy,
* Delta Lake's Spark reader (tests only: an implementation other than finpipe's writer
  reads the lake): Maven Central, the release built on the installed pyspark's minor.
* Prometheus and promtool: Debian's ``prometheus`` package, unpacked (not installed).

Everything lands in ``<cache>/<component>/<version>/`` with a ``manifest.json`` written
last, so an interrupted download is redone, and a complete one is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.4.0"
LOG4J_VERSION = "2.25.2"
MINIO_MODULE = "github.com/minio/minio"
# The repository is archived; this is its final commit's pseudo-version.
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
# Delta Lake's Spark connector per Spark minor: its artifact id names the Spark minor it is
# built on (delta-spark_<spark minor>_<scala>), its version is Delta's own.
DELTA_SPARK_RELEASES = {"4.2": "4.4.0"}
PROMETHEUS_PACKAGE = "prometheus"
PROMETHEUS_COMMANDS = ("prometheus", "promtool")
COMPOSE_MODULE = "github.com/docker/compose/v2"
COMPOSE_VERSION = "v2.40.3"


class ProvisioningError(RuntimeError):
    """A download or build failed; the message says what to do."""


def say(message: str) -> None:
    print(f"[finpipe] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def is_complete(self) -> bool:
        """True when the manifest exists and every file it lists has its recorded size."""
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return False
        files = manifest.get("files", {})
        return bool(files) and all(
            (self.root / rel).is_file() and (self.root / rel).stat().st_size == entry["size"]
            for rel, entry in files.items()
        )

    def write_manifest(self, files: list[Path]) -> None:
        entries = {}
        for path in sorted(files):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries[str(path.relative_to(self.root))] = {
                "size": path.stat().st_size,
                "sha256": digest,
            }
        payload = {"name": self.name, "version": self.version, "files": entries}
        self.manifest_path.write_text(json.dumps(payload, indent=1))


def _require(tool: str, hint: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise ProvisioningError(f"'{tool}' is not installed: {hint}")
    return found


def _run_streaming(argv: list[str], *, cwd: Path, env: dict[str, str], label: str) -> None:
    """Run a long step, printing a progress line per download or built package."""
    say(f"{label}: {' '.join(argv[:3])} ... (progress below)")
    with subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        tail: list[str] = []
        count = 0
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-40:], line]
            if line.startswith(("Downloaded from", "go: downloading")):
                count += 1
                if count % 20 == 1:
                    say(f"{label}: {count} downloads so far ({line.split()[-1][:90]})")
            elif argv[0].endswith("go") and line and not line.startswith("go:"):
                count += 1
                if count % 100 == 0:
                    say(f"{label}: compiled {count} packages")
    if proc.returncode != 0:
        detail = "\n".join(tail)
        raise ProvisioningError(
            f"{label} failed (exit {proc.returncode}). Last output:\n{detail}\n"
            "Check that the registry is reachable and retry; partial results are redone."
        )


# --- Maven -------------------------------------------------------------------------------


def _pom(artifact_id: str, dependencies: list[tuple[str, str, str]]) -> str:
    deps = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in dependencies
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>finpipe.provisioning</groupId>
  <artifactId>{artifact_id}</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


def _maven_copy(artifact: Artifact, dependencies: list[tuple[str, str, str]]) -> list[Path]:
    mvn = _require("mvn", "install Maven (Debian: apt-get install maven) and Java 17+")
    _require("java", "install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)")
    libs = artifact.root / "libs"
    shutil.rmtree(artifact.root, ignore_errors=True)
    libs.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="finpipe-mvn-") as work:
        Path(work, "pom.xml").write_text(_pom(f"{artifact.name}-deps", dependencies))
        _run_streaming(
            [
                mvn,
                "-B",
                "-Dstyle.color=never",
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs}",
            ],
            cwd=Path(work),
            env=dict(os.environ),
            label=f"fetching {artifact.name} {artifact.version} from Maven Central",
        )
    return sorted(libs.glob("*.jar"))


def kafka_artifact(cache_dir: Path) -> Artifact:
    return Artifact("kafka", KAFKA_VERSION, cache_dir / "kafka" / KAFKA_VERSION)


def ensure_kafka(cache_dir: Path) -> Artifact:
    artifact = kafka_artifact(cache_dir)
    if artifact.is_complete():
        return artifact
    jars = _maven_copy(
        artifact,
        [
            ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
            ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
            ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ],
    )
    artifact.write_manifest(jars)
    say(f"Kafka {KAFKA_VERSION}: {len(jars)} jars cached in {artifact.root}")
    return artifact


# --- Spark connectors --------------------------------------------------------------------


def pyspark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def spark_versions() -> tuple[str, str]:
    """(spark version, scala binary version) of the installed pyspark."""
    import pyspark

    jars = pyspark_jars_dir()
    scala = next(jars.glob("scala-library-*.jar"), None)
    if scala is None:
        raise ProvisioningError(f"pyspark's jars folder {jars} is incomplete: reinstall pyspark")
    scala_full = scala.name.removeprefix("scala-library-").removesuffix(".jar")
    scala_binary = ".".join(scala_full.split(".")[:2])
    return pyspark.__version__, scala_binary


def spark_connectors_artifact(cache_dir: Path) -> Artifact:
    spark, scala = spark_versions()
    version = f"spark-{spark}_{scala}"
    return Artifact("spark-connectors", version, cache_dir / "spark-connectors" / version)


def _artifact_id_of(jar_name: str) -> str:
    """`kafka-clients-4.1.0.jar` -> `kafka-clients` (drop the version and suffix)."""
    return re.sub(r"-\d+\.[\w.]*(?:-[\w.]+)?\.jar$", "", jar_name)


def _keep_unshipped(artifact: Artifact, jars: list[Path]) -> list[Path]:
    """The jars pyspark does not ship already (its hadoop, slf4j, ... would clash on the
    classpath): the others are deleted; the artifact's manifest names what stays."""
    shipped = {_artifact_id_of(j.name) for j in pyspark_jars_dir().glob("*.jar")}
    kept = []
    for jar in jars:
        if _artifact_id_of(jar.name) in shipped:
            jar.unlink()
            continue
        kept.append(jar)
    artifact.write_manifest(kept)
    return kept


def ensure_spark_connectors(cache_dir: Path) -> Artifact:
    artifact = spark_connectors_artifact(cache_dir)
    if artifact.is_complete():
        return artifact
    spark, scala = spark_versions()
    jars = _maven_copy(artifact, [("org.apache.spark", f"spark-sql-kafka-0-10_{scala}", spark)])
    kept = _keep_unshipped(artifact, jars)
    say(f"Spark's Kafka source for Spark {spark}: {len(kept)} jars cached")
    return artifact


def spark_jars_folder(cache_dir: Path) -> Path:
    """Where provisioning puts Spark's connector jars: the value of ``SPARK_JARS`` that
    the launchers set (nothing is fetched here; a missing folder fails in the job)."""
    return spark_connectors_artifact(cache_dir).root / "libs"


def delta_spark_artifact(cache_dir: Path) -> Artifact:
    spark, scala = spark_versions()
    minor = ".".join(spark.split(".")[:2])
    delta = DELTA_SPARK_RELEASES.get(minor)
    if delta is None:
        raise ProvisioningError(
            f"no Delta Lake release for Spark {minor} is pinned (infra/artifacts.py, "
            f"DELTA_SPARK_RELEASES: {DELTA_SPARK_RELEASES}): pin the delta-spark_{minor}_"
            f"{scala} version that Maven Central serves for the installed pyspark {spark}"
        )
    version = f"delta-spark_{minor}_{scala}-{delta}"
    return Artifact("delta-spark", version, cache_dir / "delta-spark" / version)


def ensure_delta_spark(cache_dir: Path) -> Artifact:
    """Delta's Spark reader and its runtime jars, less those pyspark ships."""
    artifact = delta_spark_artifact(cache_dir)
    if artifact.is_complete():
        return artifact
    spark, scala = spark_versions()
    minor = ".".join(spark.split(".")[:2])
    delta = DELTA_SPARK_RELEASES[minor]
    jars = _maven_copy(artifact, [("io.delta", f"delta-spark_{minor}_{scala}", delta)])
    kept = _keep_unshipped(artifact, jars)
    say(f"Delta Lake {delta} for Spark {minor}: {len(kept)} jars cached")
    return artifact


# --- MinIO -------------------------------------------------------------------------------


def minio_artifact(cache_dir: Path) -> Artifact:
    return Artifact("minio", MINIO_VERSION, cache_dir / "minio" / MINIO_VERSION)


def ensure_minio(cache_dir: Path) -> Artifact:
    artifact = minio_artifact(cache_dir)
    if artifact.is_complete():
        return artifact
    go = _require("go", "install Go 1.24+ (https://go.dev/doc/install or apt-get install golang)")
    artifact.root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOBIN=str(artifact.root), CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    say("building MinIO from source: several minutes and a few GB of RAM, done once")
    _run_streaming(
        [go, "install", "-v", f"{MINIO_MODULE}@{MINIO_VERSION}"],
        cwd=artifact.root,
        env=env,
        label="building MinIO",
    )
    binary = artifact.root / "minio"
    if not binary.is_file():
        raise ProvisioningError(f"go install finished but {binary} is missing")
    artifact.write_manifest([binary])
    say(f"MinIO {MINIO_VERSION} built: {binary}")
    return artifact


# --- Prometheus ----------------------------------------------------------------------------


def prometheus_artifact(cache_dir: Path) -> Artifact:
    """The newest complete unpacked ``prometheus`` package in the cache (or where the
    next one goes: its version is Debian's, known once downloaded)."""
    folder = cache_dir / "prometheus"
    found = sorted(folder.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    for manifest in reversed(found):
        artifact = Artifact("prometheus", manifest.parent.name, manifest.parent)
        if artifact.is_complete():
            return artifact
    return Artifact("prometheus", "none", folder / "none")


def _apt_download(package: str, into: Path) -> Path:
    """``apt-get download`` (no install, no root needed); refreshes the package lists once
    when they do not know the package yet."""
    apt = _require("apt-get", "Prometheus comes from Debian's packages: run on Debian/Ubuntu")
    for attempt in range(2):
        done = subprocess.run(
            [apt, "-q", "download", package], cwd=into, capture_output=True, text=True
        )
        debs = sorted(into.glob(f"{package}_*.deb"))
        if done.returncode == 0 and debs:
            return debs[-1]
        if attempt == 0:
            say(f"apt-get download {package} failed; updating the package lists once")
            subprocess.run([apt, "-q", "update"], capture_output=True, text=True)
    raise ProvisioningError(
        f"apt-get download {package} failed: {(done.stderr or done.stdout).strip()[-1500:]}. "
        "As root, `apt-get update` refreshes the package lists."
    )


def ensure_prometheus(cache_dir: Path) -> Artifact:
    """``prometheus`` and ``promtool`` from Debian's ``prometheus`` package, unpacked into
    the cache: nothing is installed on the system and no service is started. (Building
    them from the Go module, as MinIO is, was not done after 20 minutes on 2 busy cores here.)"""
    artifact = prometheus_artifact(cache_dir)
    if artifact.is_complete():
        return artifact
    dpkg_deb = _require("dpkg-deb", "Prometheus comes from Debian's packages: install dpkg")
    with tempfile.TemporaryDirectory(prefix="finpipe-prometheus-") as work:
        say(f"downloading Debian's {PROMETHEUS_PACKAGE} package (prometheus and promtool)")
        deb = _apt_download(PROMETHEUS_PACKAGE, Path(work))
        version = deb.name.split("_")[1].replace("%3a", ":")
        unpacked = Path(work) / "unpacked"
        subprocess.run([dpkg_deb, "-x", str(deb), str(unpacked)], check=True)
        artifact = Artifact("prometheus", version, cache_dir / "prometheus" / version)
        shutil.rmtree(artifact.root, ignore_errors=True)
        artifact.root.mkdir(parents=True)
        binaries = []
        for command in PROMETHEUS_COMMANDS:
            source = unpacked / "usr" / "bin" / command
            if not source.is_file():
                raise ProvisioningError(f"{deb.name} has no usr/bin/{command}")
            binaries.append(Path(shutil.copy2(source, artifact.root / command)))
    artifact.write_manifest(binaries)
    say(f"Prometheus {version} (Debian) cached in {artifact.root}")
    return artifact


def prometheus_binary(cache_dir: Path, command: str = "prometheus") -> Path:
    return ensure_prometheus(cache_dir).root / command


# --- Docker Compose (for the tests: `docker-compose config` needs no Docker engine) ------


def compose_artifact(cache_dir: Path) -> Artifact:
    return Artifact("compose", COMPOSE_VERSION, cache_dir / "compose" / COMPOSE_VERSION)


def ensure_compose(cache_dir: Path) -> Artifact:
    """Docker Compose built from its Go module, so the tests validate docker-compose.yml
    with the real implementation. Its go.mod has `exclude` directives, which
    `go install module@version` refuses, so the module's source is downloaded through
    the proxy and built in a scratch copy."""
    artifact = compose_artifact(cache_dir)
    if artifact.is_complete():
        return artifact
    go = _require("go", "install Go 1.24+ (https://go.dev/doc/install or apt-get install golang)")
    artifact.root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    say(f"downloading Docker Compose {COMPOSE_VERSION}'s source (for validating the compose file)")
    found = subprocess.run(
        [go, "mod", "download", "-json", f"{COMPOSE_MODULE}@{COMPOSE_VERSION}"],
        cwd=artifact.root,
        env=env,
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise ProvisioningError(
            f"go mod download {COMPOSE_MODULE}@{COMPOSE_VERSION} failed: "
            f"{(found.stderr or found.stdout).strip()[-2000:]}"
        )
    source = Path(json.loads(found.stdout)["Dir"])
    binary = artifact.root / "docker-compose"
    with tempfile.TemporaryDirectory(prefix="finpipe-compose-") as work:
        tree = Path(work) / "compose"
        shutil.copytree(source, tree)
        for path in [tree, *tree.rglob("*")]:  # the module cache is read-only
            path.chmod(path.stat().st_mode | 0o200)
        version_flag = f"-X {COMPOSE_MODULE}/internal.Version={COMPOSE_VERSION}"
        _run_streaming(
            [go, "build", "-v", "-ldflags", version_flag, "-o", str(binary), "./cmd"],
            cwd=tree,
            env=env,
            label="building Docker Compose",
        )
    if not binary.is_file():
        raise ProvisioningError(f"go build finished but {binary} is missing")
    artifact.write_manifest([binary])
    say(f"Docker Compose {COMPOSE_VERSION} built: {binary}")
    return artifact


def compose_binary(cache_dir: Path) -> Path:
    return ensure_compose(cache_dir).root / "docker-compose"


def kafka_classpath(cache_dir: Path) -> str:
    return str(ensure_kafka(cache_dir).root / "libs" / "*")
