"""WebUI glue for TI Trainer: the tab, the settings section and the API routes. No training logic here."""

import os

from modules import call_queue, infotext_utils, progress, script_callbacks, scripts, shared

# The WebUI puts the extension root on sys.path while this file loads: import the package now.
from lib_ti import hosts
from lib_ti.api.access import access_from_cmd_opts, api_dependencies
from lib_ti.api.routes import create_router, create_ui_router
from lib_ti.jobs.runtime import runtime
from lib_ti.training.config import TrainConfig
from lib_ti.ui.form import config_to_values
from lib_ti.ui.tab import TabActions
from lib_ti.ui.layout import build_tab
from lib_ti.ui.queue_section import QueueActions
from lib_ti.ui.grid_section import GridActions, check_sampler
from lib_ti.ui.inspect_section import InspectActions

webui = hosts.detect()
SECTION = ("ti_trainer", "TI Trainer")
CATEGORY = "training"  # the WebUI's Training category in Settings (A1111 >= 1.8, Forge)
# Jobs and the queue belong to the process, not to this file: Reload UI runs this file again and gets them back.
ti = runtime(webui)


class CheckpointNames(scripts.Script):
    """'<name>-<step>' (a run's checkpoint) and '<name>-x<w>' (scaled vectors) work in every prompt, so a test grid
    cell's infotext reproduces it in txt2img, after a reload or a restart too."""

    def title(self):
        return "TI Trainer: checkpoint names in prompts"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        webui.resolve_prompt_aliases(p, ti.api_host.run_root())


def option(default, label: str):
    """An option of our section, filed under the WebUI's Training category where the WebUI has categories."""
    info = shared.OptionInfo(default, label, section=SECTION)
    info.category_id = CATEGORY  # set after construction: older WebUIs' OptionInfo has no such argument
    return info


def on_ui_settings():
    shared.opts.add_option(
        "ti_trainer_output_dir",
        option(
            os.path.join("outputs", "ti-trainer"),
            "Folder for runs: checkpoints, previews, logs (one subfolder per embedding)",
        ),
    )
    shared.opts.add_option(
        "ti_trainer_clip_model",
        option(
            "openai/clip-vit-large-patch14",
            "CLIP model for the test grid's quality scores (a local folder, or a "
            "Hugging Face id already downloaded; nothing is fetched)",
        ),
    )
    shared.opts.add_option(
        "ti_trainer_grid_after_training",
        option(
            False,
            "Render a test grid (strengths × prompts × checkpoints, txt2img's settings) when training ends",
        ),
    )
    shared.opts.add_option(
        "ti_trainer_verify_model",
        option(
            False,
            "Check that training left the model's weights unchanged (hashes every weight before and after)",
        ),
    )


def on_ui_tabs():
    host = webui.WebUIHost(owns_state=False)
    actions = TabActions(
        ti.manager,
        host,
        webui.WebUIModel,
        shared.state.interrupt,
        reload_embeddings=webui.reload_embeddings,
        bitsandbytes=webui.bitsandbytes_available,
        queue=ti.queue,
        checkpoint_path=webui.checkpoint_path,
        finish_task=progress.finish_task,  # a refused press ends the progress bar it opened
    )
    grid_actions = GridActions(
        run=lambda request, stop: webui.run_grid_queued(request, host.run_root(), False, stop),
        names=webui.usable_embedding_names,
        defaults=webui.txt2img_defaults,
        samplers=webui.sampler_names,
    )
    tab = build_tab(
        actions,
        call_queue.wrap_gradio_gpu_call,
        config_to_values(TrainConfig()),
        grid_actions,
        add_send_buttons,
        InspectActions(webui.WebUIInspection(host.run_root()), lambda: sorted(webui.existing_embedding_names())),
        QueueActions(ti.queue),
    )
    return [(tab, "TI Trainer", "ti_trainer_tab")]


def add_send_buttons(gallery, infotext) -> list:
    """The WebUI's own 'Send to txt2img' for the selected cell: its infotext fills txt2img's fields.

    The button starts disabled: the tab enables it once a cell is selected, so it never sends another image.
    """
    buttons = infotext_utils.create_buttons(["txt2img"])
    infotext_utils.register_paste_params_button(
        infotext_utils.ParamBinding(
            paste_button=buttons["txt2img"],
            tabname="txt2img",
            source_text_component=infotext,
            source_image_component=gallery,
        )
    )
    buttons["txt2img"].interactive = False
    return [buttons["txt2img"]]


def checked_grid(request):
    """The API's grid: an unknown sampler is refused rather than silently replaced by txt2img's default."""
    check_sampler(request.sampler_name, webui.sampler_names(), webui.known_sampler)
    return webui.run_grid_queued(request, ti.api_host.run_root(), owns_state=True)


def on_app_started(demo, app):
    """The tab's own route always (behind the page's login); the API only when the WebUI's API is on."""
    if demo is not None:
        app.include_router(create_ui_router(ti.manager))
    access = access_from_cmd_opts(shared.cmd_opts)
    if not access.enabled:
        print(f"TI Trainer: no HTTP API: {access.reason}.")
        return
    app.include_router(
        create_router(
            ti.manager,
            ti.api_host,
            webui.WebUIModel,
            shared.state.interrupt,
            api_dependencies(access),
            grid=checked_grid,
            grid_defaults=webui.txt2img_defaults,
            inspection=webui.WebUIInspection(ti.api_host.run_root()),
            queue=ti.queue,
        )
    )


def on_before_ui():
    print(webui.add_xyz_axes())


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_before_ui(on_before_ui)
script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_app_started(on_app_started)
