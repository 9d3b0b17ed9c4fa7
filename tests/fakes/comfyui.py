#!/usr/bin/env python3
"""Fake self-hosted ComfyUI server running video workflows (providers.md §13).

Protocol sources:
  * https://docs.comfy.org/development/comfyui-server/comms_routes (routes; every route also under /api) and
    https://docs.comfy.org/development/comfyui-server/comms_overview (API-format prompts, history)
  * comfyanonymous/ComfyUI server.py: post_prompt (`{prompt, client_id, prompt_id?, extra_data, front, number,
    partial_execution_targets}` -> `{prompt_id, number, node_errors}`; 400 `{error, node_errors}`; no prompt ->
    400 `{"error": {"type": "no_prompt", …}, "node_errors": {}}`; a client `prompt_id` is used as given),
    get_history (`{}` until the prompt ran), get_queue, post_queue (`delete`/`clear`), post_interrupt
    (`{"prompt_id"}` interrupts only that prompt), view_image (`filename`, `subfolder`, `type`; 400 on `..` or a
    leading `/`, 403 on a subfolder escaping the directory, 404 when missing)
  * execution.py validate_prompt / validate_inputs (error types invalid_prompt, missing_node_type,
    prompt_no_outputs, prompt_outputs_failed_validation, required_input_missing, bad_linked_input,
    return_type_mismatch, invalid_input_type, value_smaller_than_min, value_bigger_than_max, value_not_in_list;
    node_errors `{id: {errors, dependent_outputs, class_type}}`), history entries
    `{prompt, outputs, status: {status_str, completed, messages}, meta}`, execution_error /
    execution_interrupted message fields
  * comfy_extras/nodes_video.py (CreateVideo, SaveVideo "video/ComfyUI" -> subfolder video,
    ComfyUI_00001_.mp4), comfy_api/latest/_ui.py (PreviewVideo.as_dict -> `{"images": [...], "animated": [true]}`),
    comfy_extras/nodes_wan.py, nodes_hunyuan.py, nodes_lt.py (latent width/height/length),
    Kosinkadink/ComfyUI-VideoHelperSuite videohelpersuite/nodes.py (VHS_VideoCombine -> `{"gifs": [{filename,
    subfolder, type, format, frame_rate, workflow, fullpath}]}`)

Endpoints (each also as /api/...):
  POST /prompt                  -> 200 {prompt_id, number, node_errors} | 400 {error, node_errors}
  GET  /history/{prompt_id}     -> 200 {} until done, then {prompt_id: {...}}
  GET  /history[?max_items=N]   -> 200 all finished prompts
  POST /history                 -> 200 ({"delete": [ids]} | {"clear": true})
  GET  /queue                   -> 200 {queue_running: [...], queue_pending: [...]}
  POST /queue                   -> 200 ({"delete": [ids]} | {"clear": true}: drops pending prompts)
  POST /interrupt               -> 200 (body {"prompt_id"} optional)
  GET  /prompt                  -> 200 {exec_info: {queue_remaining}}
  GET  /system_stats            -> 200 {system, devices}
  GET  /view?filename=&subfolder=&type=   -> the file
No auth (ComfyUI has none); the plan key `comfyui_auth` puts a bearer-token proxy in front.
"""

from __future__ import annotations

import copy
import os
import sys
import time
import uuid
from http import HTTPStatus

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakelib  # noqa: E402
from fakelib import BadJSON, FakeProvider, Job, Request, Response, Route, json_response  # noqa: E402

P = r"^(?:/api)?"  # every route is also served under /api
MAX_RES = 16384  # nodes.MAX_RESOLUTION
U64 = 0xFFFFFFFFFFFFFFFF

SAMPLERS = ["euler", "euler_cfg_pp", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m",
            "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm", "lcm", "ddim", "uni_pc", "uni_pc_bh2", "res_multistep"]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
              "kl_optimal"]
#: What this fake box has installed (models/ folders).
UNETS = ["wan2.2_ti2v_5B_fp16.safetensors", "wan2.1_t2v_1.3B_fp16.safetensors",
         "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
         "hunyuan_video_t2v_720p_bf16.safetensors"]
CLIPS = ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "umt5_xxl_fp16.safetensors", "t5xxl_fp16.safetensors",
         "llava_llama3_fp8_scaled.safetensors", "clip_l.safetensors"]
VAES = ["wan2.2_vae.safetensors", "wan_2.1_vae.safetensors", "hunyuan_video_vae_bf16.safetensors"]
CKPTS = ["ltx-video-2b-v0.9.5.safetensors"]
CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image"]
VHS_FORMATS = ["image/gif", "image/webp", "video/h264-mp4", "video/h265-mp4", "video/webm"]


def INT(lo, hi):  # noqa: N802 - mirrors ComfyUI's type names
    return ("INT", {"min": lo, "max": hi})


def FLOAT(lo, hi):  # noqa: N802
    return ("FLOAT", {"min": lo, "max": hi})


STRING = ("STRING", {})
BOOLEAN = ("BOOLEAN", {})


def COMBO(values):  # noqa: N802
    return ("COMBO", values)


#: class_type -> {required, optional, outputs, output_node, latent: (spatial factor, temporal step)}
NODES: dict[str, dict] = {
    "UNETLoader": {"required": {"unet_name": COMBO(UNETS), "weight_dtype": COMBO(["default", "fp8_e4m3fn",
                                                                                  "fp8_e4m3fn_fast", "fp8_e5m2"])},
                   "outputs": ["MODEL"]},
    "CLIPLoader": {"required": {"clip_name": COMBO(CLIPS), "type": COMBO(CLIP_TYPES)},
                   "optional": {"device": COMBO(["default", "cpu"])}, "outputs": ["CLIP"]},
    "VAELoader": {"required": {"vae_name": COMBO(VAES)}, "outputs": ["VAE"]},
    "CheckpointLoaderSimple": {"required": {"ckpt_name": COMBO(CKPTS)}, "outputs": ["MODEL", "CLIP", "VAE"]},
    "ModelSamplingSD3": {"required": {"model": "MODEL", "shift": FLOAT(0.0, 100.0)}, "outputs": ["MODEL"]},
    "CLIPTextEncode": {"required": {"text": STRING, "clip": "CLIP"}, "outputs": ["CONDITIONING"]},
    "Wan22ImageToVideoLatent": {"required": {"vae": "VAE", "width": INT(32, MAX_RES), "height": INT(32, MAX_RES),
                                             "length": INT(1, MAX_RES), "batch_size": INT(1, 4096)},
                                "optional": {"start_image": "IMAGE"}, "outputs": ["LATENT"], "latent": (16, 4)},
    "EmptyHunyuanLatentVideo": {"required": {"width": INT(16, MAX_RES), "height": INT(16, MAX_RES),
                                             "length": INT(1, MAX_RES), "batch_size": INT(1, 4096)},
                                "outputs": ["LATENT"], "latent": (8, 4)},
    "WanImageToVideo": {"required": {"positive": "CONDITIONING", "negative": "CONDITIONING", "vae": "VAE",
                                     "width": INT(16, MAX_RES), "height": INT(16, MAX_RES), "length": INT(1, MAX_RES),
                                     "batch_size": INT(1, 4096)},
                        "optional": {"clip_vision_output": "CLIP_VISION_OUTPUT", "start_image": "IMAGE"},
                        "outputs": ["CONDITIONING", "CONDITIONING", "LATENT"], "latent": (8, 4)},
    "EmptyLTXVLatentVideo": {"required": {"width": INT(64, MAX_RES), "height": INT(64, MAX_RES),
                                          "length": INT(1, MAX_RES), "batch_size": INT(1, 4096)},
                             "outputs": ["LATENT"], "latent": (32, 8)},
    "KSampler": {"required": {"model": "MODEL", "seed": INT(0, U64), "steps": INT(1, 10000), "cfg": FLOAT(0.0, 100.0),
                              "sampler_name": COMBO(SAMPLERS), "scheduler": COMBO(SCHEDULERS),
                              "positive": "CONDITIONING", "negative": "CONDITIONING", "latent_image": "LATENT",
                              "denoise": FLOAT(0.0, 1.0)},
                 "outputs": ["LATENT"]},
    "VAEDecode": {"required": {"samples": "LATENT", "vae": "VAE"}, "outputs": ["IMAGE"]},
    "CreateVideo": {"required": {"images": "IMAGE", "fps": FLOAT(1.0, 120.0)}, "optional": {"audio": "AUDIO"},
                    "outputs": ["VIDEO"]},
    # `image` names a file in ComfyUI's input directory (one uploaded through /upload/image here).
    "LoadImage": {"required": {"image": ("INPUT_FILE", None)}, "outputs": ["IMAGE", "MASK"]},
    "SaveVideo": {"required": {"video": "VIDEO", "filename_prefix": STRING, "format": COMBO(["auto", "mp4"]),
                               "codec": COMBO(["auto", "h264"])},
                  "outputs": [], "output_node": True},
    "VHS_VideoCombine": {"required": {"images": "IMAGE", "frame_rate": FLOAT(1.0, 1000.0),
                                      "loop_count": INT(0, 100), "filename_prefix": STRING,
                                      "format": COMBO(VHS_FORMATS), "pingpong": BOOLEAN, "save_output": BOOLEAN},
                         "optional": {"audio": "AUDIO", "meta_batch": "VHS_BatchManager", "vae": "VAE"},
                         "outputs": ["VHS_FILENAMES"], "output_node": True},
}
DEFAULT_PREFIX = {"SaveVideo": "video/ComfyUI", "VHS_VideoCombine": "AnimateDiff"}
OOM = ("Allocation on device 0 would exceed allowed memory. (out of memory)\nCurrently allocated     : 22.41 GiB\n"
       "Requested               : 1.86 GiB\nDevice limit            : 23.64 GiB\nFree (according to CUDA): 19.06 MiB")


def now_ms(ts: float | None = None) -> int:
    return int((ts if ts is not None else time.time()) * 1000)


def text_response(status: int, text: str | None = None) -> Response:
    """aiohttp's plain-text error page: "404: Not Found"."""
    return Response(status, text if text is not None else f"{status}: {HTTPStatus(status).phrase}",
                    "text/plain; charset=utf-8")


def err(typ: str, message: str, details: str = "", **extra) -> dict:
    return {"type": typ, "message": message, "details": details, "extra_info": extra}


def is_link(v) -> bool:
    return isinstance(v, list)


class ComfyUIFake(FakeProvider):
    name = "comfyui"
    extra_plan_keys = {
        "comfyui_auth": "true: a proxy in front wants `Authorization: Bearer KEY` (401 text otherwise)",
    }

    def __init__(self, key: str, base_url: str):
        super().__init__(key, base_url)
        self.number = 0
        self.counters: dict[tuple[str, str], int] = {}
        self.files: dict[tuple[str, str, str], str] = {}  # (type, subfolder, filename) -> prompt id
        self.inputs: dict[str, bytes] = {}  # "subfolder/name" (or "name") -> bytes, from /upload/image

    def routes(self) -> list[Route]:
        pid = r"(?P<prompt_id>[^/]+)"
        return [
            Route("POST", P + r"/prompt$", self.post_prompt, "create"),
            Route("GET", P + r"/prompt$", self.get_prompt),
            Route("GET", P + rf"/history/{pid}$", self.get_history_item, "poll"),
            Route("GET", P + r"/history$", self.get_history),
            Route("POST", P + r"/history$", self.post_history),
            Route("GET", P + r"/queue$", self.get_queue),
            Route("POST", P + r"/queue$", self.post_queue, "cancel"),
            Route("POST", P + r"/interrupt$", self.post_interrupt, "cancel"),
            Route("GET", P + r"/system_stats$", self.system_stats),
            Route("GET", P + r"/view$", self.view, "download"),
            Route("POST", P + r"/upload/image$", self.upload_image),
        ]

    # -- auth / errors ------------------------------------------------------------------------
    def check_auth(self, req: Request):
        if self.store.plan_value("comfyui_auth") and req.header("Authorization") != f"Bearer {self.key}":
            return text_response(401)
        return None

    def fault_body(self, status: int, fault: dict, category):
        if status == 500:  # aiohttp's page for an exception in a handler
            return text_response(500, "500 Internal Server Error\n\nServer got itself in trouble")
        return text_response(status)

    def not_found(self, req: Request):
        return text_response(404)

    def method_not_allowed(self, req: Request):
        return text_response(405)

    # -- validation (execution.validate_prompt) ------------------------------------------------
    def _validate_node(self, prompt: dict, nid: str, validated: dict) -> tuple:
        if nid in validated:
            return validated[nid]
        validated[nid] = (True, [], nid)  # a cycle is ComfyUI's problem at run time, not here
        node = prompt[nid]
        cls = NODES[node["class_type"]]
        inputs = node.get("inputs") or {}
        errors, valid = [], True
        specs = [(n, s, True) for n, s in cls["required"].items()] + \
                [(n, s, False) for n, s in cls.get("optional", {}).items()]
        for name, spec, required in specs:
            if name not in inputs:
                if required:
                    errors.append(err("required_input_missing", "Required input is missing", name, input_name=name))
                continue
            val = inputs[name]
            expected = spec if isinstance(spec, str) else spec[0]
            if is_link(val):
                if len(val) != 2:
                    errors.append(err("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                      "[node_id, slot_index]", name, input_name=name, received_value=val))
                    continue
                src, slot = str(val[0]), val[1]
                if src not in prompt or not isinstance(slot, int):
                    errors.append(err("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                      "[node_id, slot_index]", name, input_name=name, received_value=val))
                    continue
                outs = NODES[prompt[src]["class_type"]]["outputs"]
                received = outs[slot] if 0 <= slot < len(outs) else None
                if received != expected:
                    errors.append(err("return_type_mismatch", "Return type mismatch between linked nodes",
                                      f"{name}, received_type({received}) mismatch input_type({expected})",
                                      input_name=name, received_type=received, linked_node=val))
                    continue
                if self._validate_node(prompt, src, validated)[0] is not True:
                    valid = False
                continue
            if isinstance(spec, str):
                continue  # a raw value where a link belongs: ComfyUI only finds out when it runs
            kind, opts = spec
            if kind in ("INT", "FLOAT"):
                try:
                    if isinstance(val, bool):
                        raise ValueError(f"invalid literal: {val}")
                    num = int(val) if kind == "INT" else float(val)
                except (TypeError, ValueError) as e:
                    errors.append(err("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                                      f"{name}, {val}, {e}", input_name=name, received_value=val))
                    continue
                if num < opts["min"]:
                    errors.append(err("value_smaller_than_min", f"Value {num} smaller than min of {opts['min']}",
                                      name, input_name=name, received_value=val))
                elif num > opts["max"]:
                    errors.append(err("value_bigger_than_max", f"Value {num} bigger than max of {opts['max']}",
                                      name, input_name=name, received_value=val))
            elif kind == "INPUT_FILE" and val not in self.inputs:
                shown = sorted(self.inputs)[:20]
                errors.append(err("value_not_in_list", "Value not in list", f"{name}: '{val}' not in {shown}",
                                  input_name=name, received_value=val))
            elif kind == "COMBO" and val not in opts:
                shown = opts if len(opts) <= 20 else opts[:20] + ["..."]
                errors.append(err("value_not_in_list", "Value not in list", f"{name}: '{val}' not in {shown}",
                                  input_name=name, received_value=val))
        if errors:
            valid = False
        validated[nid] = (valid, errors, nid)
        return validated[nid]

    def _validate(self, prompt, targets) -> tuple[bool, dict | None, list, dict]:
        if not isinstance(prompt, dict):
            return False, err("invalid_prompt", "Invalid prompt: the prompt must be an object of nodes."), [], {}
        outputs = []
        for nid, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return False, err("invalid_prompt", "Cannot execute because a node is missing the class_type "
                                  "property.", f"Node ID '#{nid}'"), [], {}
            ct = node["class_type"]
            if ct not in NODES:
                title = (node.get("_meta") or {}).get("title", ct)
                return False, err("missing_node_type", f"Node '{title}' not found. The custom node may not be "
                                  "installed.", f"Node ID '#{nid}'", node_id=nid, class_type=ct,
                                  node_title=title), [], {}
            if NODES[ct].get("output_node"):
                outputs.append(nid)
        if targets is not None:
            outputs = [o for o in outputs if o in set(map(str, targets))]
        if not outputs:
            return False, err("prompt_no_outputs", "Prompt has no outputs"), [], {}
        good, reasons_all, node_errors, validated = [], [], {}, {}
        for o in outputs:
            ok, reasons, _ = self._validate_node(prompt, o, validated)
            if ok is True:
                good.append(o)
                continue
            reasons_all += reasons
            for nid, (v, rs, _) in validated.items():
                if v is not True and rs:
                    entry = node_errors.setdefault(nid, {"errors": rs, "dependent_outputs": [],
                                                         "class_type": prompt[nid]["class_type"]})
                    entry["dependent_outputs"].append(o)
        if not good:
            details = "\n".join(f"{r['message']}: {r['details']}"
                                for e in node_errors.values() for r in e["errors"])
            return False, err("prompt_outputs_failed_validation", "Prompt outputs failed validation", details), [], \
                node_errors
        return True, None, good, node_errors

    # -- what a prompt would produce -----------------------------------------------------------
    @staticmethod
    def _upstream(prompt: dict, start: str) -> list[str]:
        seen, order, todo = set(), [], [start]
        while todo:
            nid = todo.pop(0)
            if nid in seen or nid not in prompt:
                continue
            seen.add(nid)
            order.append(nid)
            for v in (prompt[nid].get("inputs") or {}).values():
                if is_link(v) and len(v) == 2:
                    todo.append(str(v[0]))
        return order

    def _video_plan(self, prompt: dict, out_id: str) -> dict:
        """Size, frames and fps of the video an output node would save."""
        up = self._upstream(prompt, out_id)
        node = prompt[out_id]
        fps = 24.0
        if node["class_type"] == "VHS_VideoCombine":
            fps = float(node["inputs"]["frame_rate"])
        for nid in up:
            if prompt[nid]["class_type"] == "CreateVideo":
                fps = float(prompt[nid]["inputs"]["fps"])
                break
        width, height, frames = 512, 512, 33
        for nid in up:
            spec = NODES[prompt[nid]["class_type"]]
            if "latent" in spec:
                factor, step = spec["latent"]
                i = prompt[nid]["inputs"]
                width, height = int(i["width"]) // factor * factor, int(i["height"]) // factor * factor
                frames = (int(i["length"]) - 1) // step * step + 1
                break
        sampler = next((nid for nid in up if prompt[nid]["class_type"] == "KSampler"), out_id)
        return {"width": max(2, width - width % 2), "height": max(2, height - height % 2), "frames": frames,
                "fps": fps, "seconds": round(frames / fps, 4), "sampler": sampler}

    def _saved_files(self, job: Job) -> dict:
        """The outputs of a finished prompt (file names are taken when it finishes, as ComfyUI does)."""
        d = job.data
        if "outputs" in d:
            return d["outputs"]
        outputs = {}
        with self.store.lock:
            for out_id in d["good_outputs"]:
                node = d["prompt"][out_id]
                ct = node["class_type"]
                prefix = str(node["inputs"].get("filename_prefix") or DEFAULT_PREFIX[ct])
                subfolder, _, base = prefix.replace("\\", "/").rpartition("/")
                n = self.counters.get((subfolder, base), 0) + 1
                self.counters[(subfolder, base)] = n
                if ct == "SaveVideo":
                    entry = {"filename": f"{base}_{n:05}_.mp4", "subfolder": subfolder, "type": "output"}
                    outputs[out_id] = {"images": [entry], "animated": [True]}
                else:  # VHS_VideoCombine
                    fmt = node["inputs"]["format"]
                    ext = {"image/gif": "gif", "image/webp": "webp", "video/webm": "webm"}.get(fmt, "mp4")
                    typ = "output" if node["inputs"].get("save_output", True) else "temp"
                    entry = {"filename": f"{base}_{n:05}.{ext}", "subfolder": subfolder, "type": typ,
                             "format": fmt, "frame_rate": float(node["inputs"]["frame_rate"]),
                             "workflow": f"{base}_{n:05}.png",
                             "fullpath": f"/opt/ComfyUI/{typ}/{subfolder + '/' if subfolder else ''}{base}_{n:05}.{ext}"}
                    outputs[out_id] = {"gifs": [entry]}
                self.files[(entry["type"], entry["subfolder"], entry["filename"])] = job.id
            d["outputs"] = outputs
        return outputs

    def _queue_item(self, job: Job) -> list:
        d = job.data
        return [d["number"], job.id, d["prompt"], d["extra_data"], d["good_outputs"]]

    def _history_entry(self, job: Job) -> dict:
        d = job.data
        t0 = job.started_at or job.created_at
        msgs = [["execution_start", {"prompt_id": job.id, "timestamp": now_ms(t0)}],
                ["execution_cached", {"nodes": [], "prompt_id": job.id, "timestamp": now_ms(t0)}]]
        executed = [nid for nid in d["prompt"] if nid != d["plan"]["sampler"]]
        outputs: dict = {}
        if job.phase == "succeeded":
            outputs = self._saved_files(job)
            msgs.append(["execution_success", {"prompt_id": job.id, "timestamp": now_ms(job.completed_at)}])
            status = {"status_str": "success", "completed": True, "messages": msgs}
        elif job.phase in ("failed", "moderated"):  # ComfyUI has no moderation: a moderated job fails like any other
            sampler = d["plan"]["sampler"]
            msgs.append(["execution_error", {
                "prompt_id": job.id, "node_id": sampler, "node_type": d["prompt"][sampler]["class_type"],
                "executed": executed,
                "exception_message": self.store.plan_value("error_message", OOM),
                "exception_type": self.store.plan_value("error_code", "torch.OutOfMemoryError"),
                "traceback": ['  File "/opt/ComfyUI/execution.py", line 496, in execute\n',
                              '  File "/opt/ComfyUI/comfy/samplers.py", line 1042, in sample\n'],
                "current_inputs": {}, "current_outputs": {}, "timestamp": now_ms(job.completed_at)}])
            status = {"status_str": "error", "completed": False, "messages": msgs}
        else:  # canceled: interrupted while running
            sampler = d["plan"]["sampler"]
            msgs.append(["execution_interrupted", {
                "prompt_id": job.id, "node_id": sampler, "node_type": d["prompt"][sampler]["class_type"],
                "executed": executed, "timestamp": now_ms(job.completed_at)}])
            status = {"status_str": "error", "completed": False, "messages": msgs}
        meta = {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                for nid in outputs}
        return {"prompt": self._queue_item(job), "outputs": outputs, "status": status, "meta": meta}

    # -- handlers -----------------------------------------------------------------------------
    def upload_image(self, req: Request) -> Response:
        """server.py image_upload: multipart `image` (file), `overwrite`, `type` (input|temp|output, default
        input), `subfolder`; 400 without a file; a taken name without overwrite becomes `name (1).ext`.
        Answers {name, subfolder, type}."""
        try:
            parts = fakelib.parse_multipart(req.header("Content-Type") or "", req.body)
        except Exception:  # noqa: BLE001
            return text_response(400)
        image = (parts.get("image") or [None])[-1]
        if not isinstance(image, fakelib.UploadedFile) or not image.filename:
            return text_response(400)
        if not fakelib.image_kind(image.data):
            return text_response(400, "Invalid image file")  # PIL cannot open it when LoadImage runs
        def field(name: str, default: str = "") -> str:
            value = (parts.get(name) or [default])[-1]
            return value if isinstance(value, str) else default

        kind = field("type", "input")
        if kind not in ("input", "temp", "output"):
            return text_response(400)
        subfolder = field("subfolder")
        overwrite = field("overwrite").lower() in ("true", "1")
        name = os.path.basename(image.filename)
        stem, ext = os.path.splitext(name)
        with self.store.lock:
            key = f"{subfolder}/{name}" if subfolder else name
            i = 1
            while key in self.inputs and not overwrite:
                name = f"{stem} ({i}){ext}"
                key = f"{subfolder}/{name}" if subfolder else name
                i += 1
            self.inputs[key] = image.data
        return json_response(200, {"name": name, "subfolder": subfolder, "type": kind})

    def post_prompt(self, req: Request) -> Response:
        try:
            body = req.json()
        except BadJSON:
            return self.fault_body(500, {}, "create")  # request.json() raises inside the handler
        if not isinstance(body, dict):
            return self.fault_body(500, {}, "create")
        with self.store.lock:
            if "number" in body:
                number = float(body["number"])
            else:
                number = self.number
                if body.get("front"):
                    number = -number
                self.number += 1
        if "prompt" not in body:
            return json_response(400, {"error": err("no_prompt", "No prompt provided", "No prompt provided"),
                                       "node_errors": {}})
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        ok, error, good, node_errors = self._validate(prompt, body.get("partial_execution_targets"))
        if not ok:
            fakelib.log(f"invalid prompt: {error}")
            return json_response(400, {"error": error, "node_errors": node_errors})
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        extra_data["create_time"] = now_ms()
        video_outputs = [o for o in good if prompt[o]["class_type"] in ("SaveVideo", "VHS_VideoCombine")]
        plan = self._video_plan(prompt, video_outputs[0] if video_outputs else good[0])
        texts = " ".join(str(n["inputs"].get("text", "")) for n in prompt.values()
                         if n["class_type"] == "CLIPTextEncode")
        outcome, steps = self.store.new_job_settings(texts)
        job = Job(prompt_id, width=plan["width"], height=plan["height"], seconds=plan["seconds"], outcome=outcome,
                  steps=steps, prompt=texts,
                  data={"prompt": copy.deepcopy(prompt), "number": number, "extra_data": extra_data,
                        "good_outputs": good, "plan": plan})
        self.store.add_job(job)
        if outcome == "succeed":
            fakelib.prewarm_mp4(job.width, job.height, job.seconds)
        return json_response(200, {"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def get_history_item(self, req: Request, prompt_id: str) -> Response:
        with self.store.lock:
            job = self.store.get_job(prompt_id)
            if job is None:
                return json_response(200, {})
            job.advance()
            if not job.terminal:
                return json_response(200, {})
            return json_response(200, {prompt_id: self._history_entry(job)})

    def get_history(self, req: Request) -> Response:
        with self.store.lock:
            done = [j for j in self.store.jobs.values() if j.terminal and not j.deleted]
            try:
                max_items = int(req.query["max_items"]) if "max_items" in req.query else None
            except ValueError:
                return self.fault_body(500, {}, None)
            if max_items is not None:
                done = done[-max_items:] if max_items > 0 else []
            return json_response(200, {j.id: self._history_entry(j) for j in done})

    def post_history(self, req: Request) -> Response:
        try:
            body = req.json() or {}
        except BadJSON:
            return self.fault_body(500, {}, None)
        with self.store.lock:
            for j in self.store.jobs.values():
                if j.terminal and (body.get("clear") or j.id in (body.get("delete") or [])):
                    j.deleted = True
        return Response(200, b"", None)

    def get_queue(self, req: Request) -> Response:
        with self.store.lock:
            live = [j for j in self.store.jobs.values() if not j.deleted and not j.terminal]
            running = [self._queue_item(j) for j in live if j.phase == "running"]
            pending = sorted((self._queue_item(j) for j in live if j.phase == "queued"), key=lambda i: i[0])
        return json_response(200, {"queue_running": running, "queue_pending": pending})

    def get_prompt(self, req: Request) -> Response:
        with self.store.lock:
            n = sum(1 for j in self.store.jobs.values() if not j.deleted and not j.terminal)
        return json_response(200, {"exec_info": {"queue_remaining": n}})

    def post_queue(self, req: Request) -> Response:
        try:
            body = req.json() or {}
        except BadJSON:
            return self.fault_body(500, {}, "cancel")
        with self.store.lock:
            for j in self.store.jobs.values():
                if j.phase == "queued" and not j.deleted and (body.get("clear") or j.id in (body.get("delete") or [])):
                    j.deleted = True  # dropped from the queue: it never reaches the history
        return Response(200, b"", None)

    def post_interrupt(self, req: Request) -> Response:
        try:
            body = req.json() or {}
        except BadJSON:
            body = {}
        target = body.get("prompt_id") if isinstance(body, dict) else None
        with self.store.lock:
            for j in self.store.jobs.values():
                if j.phase == "running" and not j.deleted and (target is None or j.id == target):
                    j.cancel()
        return Response(200, b"", None)

    def system_stats(self, req: Request) -> Response:
        gib = 1024 ** 3
        return json_response(200, {
            "system": {"os": "posix", "ram_total": 64 * gib, "ram_free": 48 * gib, "comfyui_version": "0.3.60",
                       "required_frontend_version": "1.26.13", "python_version": "3.12.3", "pytorch_version": "2.8.0+cu128",
                       "embedded_python": False, "argv": ["main.py", "--listen", "0.0.0.0"]},
            "devices": [{"name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": "cuda", "index": 0,
                         "vram_total": 24 * gib, "vram_free": 22 * gib, "torch_vram_total": 0, "torch_vram_free": 0}]})

    def view(self, req: Request) -> Response:
        filename = req.query.get("filename")
        if filename is None:
            return text_response(404)
        if not filename or filename[0] == "/" or ".." in filename:
            return text_response(400)
        typ = req.query.get("type", "output")
        if typ not in ("output", "input", "temp"):
            return text_response(400)
        subfolder = req.query.get("subfolder", "")
        parts = [p for p in subfolder.replace("\\", "/").split("/") if p not in ("", ".")]
        if subfolder.startswith("/") or ".." in parts:
            return text_response(403)
        subfolder = "/".join(parts)
        with self.store.lock:
            job_id = self.files.get((typ, subfolder, os.path.basename(filename)))
            job = self.store.get_job(job_id, include_deleted=True) if job_id else None
        # Files stay in the output directory until someone deletes them; "expiry" is that deletion.
        if job is None or job.phase != "succeeded" or self.store.is_expired(job.completed_at):
            return text_response(404)
        return self.serve_video(req, job, {"Content-Disposition": f'filename="{os.path.basename(filename)}"'})


if __name__ == "__main__":
    sys.exit(fakelib.main(ComfyUIFake))
