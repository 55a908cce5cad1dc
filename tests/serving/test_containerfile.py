"""The container `bentoml containerize` builds from the bento, checked without a container
engine: BentoML generates the same Dockerfile and build context it would hand to one."""

from __future__ import annotations

import re
from pathlib import Path

import bentoml
import pytest
import yaml
from bentoml._internal.container import construct_containerfile

from cxr.core.config import load_settings
from cxr.core.model_store import save_model
from cxr.train.packaging import build_bento, serving_info

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[a-z0-9,_-]+\])?==[0-9][0-9A-Za-z.+!-]*$")


def _requirements(text: str) -> list[str]:
    """The requirement lines of a requirements file (comments and blanks dropped)."""
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


@pytest.fixture(scope="module")
def small_bento(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bento of ``bentofile.yaml`` around a tiny stored Keras model (what the image
    holds does not depend on the model's size); its tag."""
    import keras

    settings = load_settings("demo", environ={})
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    checkpoint = tmp_path_factory.mktemp("tiny") / "model.keras"
    model.save(checkpoint)
    tag = save_model("cxr-container-test", checkpoint, serving_info(settings), {})
    return build_bento(tag)


def test_the_generated_dockerfile_uses_python_3_11_and_installs_the_bento_requirements(
    small_bento: str, tmp_path: Path
) -> None:
    output = tmp_path / "Dockerfile"
    bentoml.container.get_containerfile(small_bento, output_path=str(output))
    dockerfile = output.read_text()
    assert yaml.safe_load((REPO / "bentofile.yaml").read_text())["docker"]["python_version"] == (
        "3.11"
    )
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert "uv venv --python 3.11 " in dockerfile  # the image's environment: Python 3.11
    assert "pip install -r $BENTO_PATH/env/python/requirements.txt" in dockerfile
    # the service's loopback rule holds in the image too: an open container (no
    # CXR_SERVE__API_TOKEN) listens on every interface only when `docker run` says so
    assert "BENTOML_HOST" not in dockerfile and "0.0.0.0" not in dockerfile


def test_the_bento_requirements_pin_every_package_at_the_service_versions(
    small_bento: str,
) -> None:
    bento = bentoml.bentos.get(small_bento)
    shipped = _requirements(Path(bento.path_of("env/python/requirements.txt")).read_text())
    unpinned = [line for line in shipped if not PIN.match(line)]
    assert shipped and unpinned == []
    service = _requirements((REPO / "requirements-service.txt").read_text())
    assert set(shipped) == set(service)  # what the service is tested with; nothing floats
    assert f"bentoml=={bentoml.__version__}" in shipped


def test_the_build_context_carries_the_model_and_the_service_code(small_bento: str) -> None:
    bento = bentoml.bentos.get(small_bento)
    (model,) = bento.info.all_models
    with construct_containerfile(bento, enable_buildkit=True) as (context, dockerfile):
        context = Path(context)
        assert (context / "models" / model.tag.name / model.tag.version).is_dir()
        assert (context / "src" / "service.py").is_file()
        assert not (context / "src" / "cxr" / "train").exists()  # the serving code only
        assert (context / "env" / "python" / "requirements.txt").is_file()
        assert "ENTRYPOINT" in Path(dockerfile).read_text()  # what the engine would build


def test_a_second_build_in_the_same_process_ships_its_own_model(
    small_bento: str, tmp_path: Path
) -> None:
    import keras

    settings = load_settings("demo", environ={})
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.save(tmp_path / "second.keras")
    second = save_model(
        "cxr-container-second", tmp_path / "second.keras", serving_info(settings), {}
    )
    models = {str(m.tag) for m in bentoml.bentos.get(build_bento(second)).info.all_models}
    assert models == {second}  # not the model of the first build (the module is reloaded)
