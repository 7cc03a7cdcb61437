"""Tool declarations (``agentir.toolbox.base.ToolSpec``): one place per tool, and the registry built from them."""

from __future__ import annotations

import pytest

from agentir.toolbox.base import TOOL_INFO, TOOL_SPECS, TOOLS, WHOLE_IMAGE_TAG, ToolSpec, register_spec, tools_for, unavailable_reason, unregister_tool
from agentir.toolbox.learned import LEARNED_SPECS, LEARNED_TOOLS
from agentir.toolbox.learned.data import RECIPES
from agentir.toolbox.registry import UnknownNameError
from agentir.toolbox.tools import CLASSICAL_SPECS, CLASSICAL_TOOLS
from agentir.toolbox.vocab import DEGRADATIONS

BUILT_IN = (*CLASSICAL_SPECS, *LEARNED_SPECS)


def test_registry_is_built_from_the_declarations_in_order() -> None:
    """Every built-in tool's ToolInfo is its declaration's; tools_for lists classical first, then learned, each best first."""
    declared = [s.name for s in CLASSICAL_SPECS] + [s.name for s in LEARNED_SPECS if s.name in TOOL_INFO]
    for d in DEGRADATIONS:
        listed = [n for n in tools_for(d, include_manual=True) if n in TOOL_SPECS]
        assert listed == [n for n in declared if TOOL_SPECS[n].degradation == d]
    assert tuple(s.name for s in CLASSICAL_SPECS) == CLASSICAL_TOOLS
    for spec in BUILT_IN:
        if spec.name in TOOL_INFO:
            assert TOOL_SPECS[spec.name] is spec and TOOL_INFO[spec.name] == spec.info
    assert len({s.name for s in BUILT_IN}) == len(BUILT_IN)


@pytest.mark.parametrize("spec", BUILT_IN, ids=lambda s: s.name)
def test_global_tag_comes_from_whole_image(spec: ToolSpec) -> None:
    """The Executor's "global" (never tile) tag is on a tool's info exactly when it is declared whole_image."""
    assert (WHOLE_IMAGE_TAG in spec.info.tags) == spec.whole_image
    assert spec.info.tags[: len(spec.tags)] == spec.tags


def test_whole_image_tools_are_the_ones_that_fit_the_whole_frame() -> None:
    """Brightening, dehazing, deblurring, streak deraining and the JPEG-grid DCT tools are never tiled; SR and denoising are."""
    whole = {s.name for s in CLASSICAL_SPECS if s.whole_image}
    assert {s.name for s in CLASSICAL_SPECS if s.degradation in ("dark", "haze", "motion_blur", "defocus_blur")} <= whole
    assert {"dct_dejpeg", "dct_dejpeg_strong", "streak_derain", "streak_derain_mild"} <= whole
    assert not whole & {s.name for s in CLASSICAL_SPECS if s.degradation in ("noise", "low_resolution")}
    assert not any(s.whole_image for s in LEARNED_SPECS)


def test_a_declaration_refuses_the_global_tag_and_a_bad_factory_and_freezes_its_kwargs() -> None:
    """ "global" must be declared as whole_image=True, the factory must be "module:Callable", kwargs cannot change later."""
    with pytest.raises(ValueError, match="whole_image=True"):
        ToolSpec(name="x", degradation="noise", factory="m:C", tags=("global",), description="")
    with pytest.raises(ValueError, match="module:Callable"):
        ToolSpec(name="x", degradation="noise", factory="agentir.toolbox.tools.denoise.DCTDenoise", description="")
    spec = ToolSpec(name="x", degradation="noise", factory="m:C", kwargs={"a": 1}, description="")
    with pytest.raises(TypeError):
        spec.kwargs["a"] = 2  # type: ignore[index]  # deliberate: kwargs is read-only, to test the TypeError


def test_register_spec_builds_the_factory_with_name_and_kwargs() -> None:
    """A registered declaration builds ``factory(name=name, **kwargs)`` lazily; unregistering removes every trace."""
    spec = ToolSpec(name="test_spec_dct", degradation="noise", factory="agentir.toolbox.tools.denoise:DCTDenoise", kwargs={"strength": 1.7}, description="test")
    register_spec(spec)
    try:
        tool = TOOLS.get("test_spec_dct")
        assert (tool.name, tool.strength) == ("test_spec_dct", 1.7)
        assert TOOL_INFO["test_spec_dct"] == spec.info and unavailable_reason("test_spec_dct") is None
    finally:
        unregister_tool("test_spec_dct")
    assert "test_spec_dct" not in TOOL_INFO and "test_spec_dct" not in TOOL_SPECS
    with pytest.raises(UnknownNameError, match="test_spec_dct"):
        unavailable_reason("test_spec_dct")


def test_every_learned_tool_with_weights_has_its_recipe() -> None:
    """Declarations with a weights file and training recipes name the same tools in the same order; a recipe reads
    degradation and scale from its declaration."""
    with_weights = [s for s in LEARNED_SPECS if s.weights is not None]
    assert [s.name for s in with_weights] == list(RECIPES)
    for spec in with_weights:
        assert (RECIPES[spec.name].degradation, RECIPES[spec.name].scale) == (spec.degradation, spec.scale)
        assert spec.kind == "learned" and spec.description
    assert set(LEARNED_TOOLS) <= {s.name for s in with_weights}


def test_tool_order_does_not_depend_on_which_package_was_imported_first():
    """tools_for lists classical, then learned tools, best first, whether agentir.toolbox.learned or agentir.toolbox.tools was imported first."""
    import subprocess
    import sys

    code = "import {a}, {b}; from agentir.toolbox.base import tools_for; from agentir.toolbox.vocab import DEGRADATIONS; print([tools_for(d) for d in DEGRADATIONS])"
    runs = [
        subprocess.run([sys.executable, "-c", code.format(a=a, b=b)], capture_output=True, text=True, check=True, timeout=120).stdout
        for a, b in (("agentir.toolbox.tools", "agentir.toolbox.learned"), ("agentir.toolbox.learned", "agentir.toolbox.tools"))
    ]
    assert runs[0] == runs[1] and "cnn_dejpeg" in runs[0]
