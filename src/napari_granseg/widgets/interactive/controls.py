"""The controls of the interactive dock widget: layout, tooltips, the help panel and the shortcut table.

Why apart from the dock's logic: the layout is long and flat; keeping it here leaves the dock module to its
behaviour. Every control gets a tooltip; the help panel lists the shortcuts (the same table is bound on the
prompt layers and quoted in docs/widgets.md).
"""
from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QProgressBar,
                            QPushButton, QSizePolicy, QSpinBox, QVBoxLayout)

from .._common import steady_combo
from .shortcuts import shortcuts_text

__all__ = ["build_ui"]

def _button(text: str, tip: str, checkable: bool = False) -> QPushButton:
    b = QPushButton(text)
    b.setToolTip(tip)
    b.setCheckable(checkable)
    return b


def build_ui(w) -> None:
    """Create the controls as attributes of the dock ``w`` (no signal is connected here)."""
    from superqt import QLabeledDoubleSlider

    outer = QVBoxLayout(w)
    w.demo_banner = QLabel("")
    w.demo_banner.setWordWrap(True)
    w.demo_banner.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    w.demo_banner.setStyleSheet("background: #b36b00; color: white; font-weight: bold; padding: 4px;")
    w.demo_banner.setToolTip("the demo model is tiny and trained on synthetic cells: fine to try the widget, not "
                             "for real images")
    w.demo_banner.setVisible(False)
    outer.addWidget(w.demo_banner)

    form = QFormLayout()
    w.image_combo = steady_combo()
    w.image_combo.setToolTip("the image to segment; its prompts layers follow it")
    w.labels_combo = steady_combo()
    w.labels_combo.setToolTip("where commits are written (a new 'granseg labels' layer by default)")
    form.addRow("Image", w.image_combo)
    form.addRow("Labels", w.labels_combo)

    w.model_combo = steady_combo(min_chars=12)  # "unsamv2-plus" and "unsamv2-demo" fit
    w.model_combo.setEditable(True)
    w.model_combo.lineEdit().setPlaceholderText("default model")
    w.model_combo.setToolTip("a zoo name, or the path of an UnSAMv2 checkpoint file (the list is filled in the "
                             "background; empty: the default model)")
    w.device_combo = QComboBox()
    w.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
    w.device_combo.setToolTip("where the model runs (auto: CUDA, then Apple MPS, then CPU)")
    w.precision_combo = QComboBox()
    w.precision_combo.addItems(["auto", "fp32", "bf16"])
    w.precision_combo.setToolTip("auto: bfloat16 where the hardware supports it (faster); fp32: exactly the "
                                 "official float32 computation; bf16: always bfloat16")
    w.load_button = _button("Load", "load the model named on the left (in the background)")
    row = QHBoxLayout()
    row.addWidget(w.model_combo, 1)
    row.addWidget(w.device_combo)
    row.addWidget(w.precision_combo)
    row.addWidget(w.load_button)
    form.addRow("Model", row)
    from .._compute import ComputeSetting

    w.compute = ComputeSetting(on_change=w._compute_changed, on_error=w._compute_failed)
    form.addRow("Compute", w.compute.row)
    w.model_label = QLabel("no model loaded")
    w.model_label.setWordWrap(True)
    w.model_label.setToolTip("the model in use and its device")
    form.addRow("", w.model_label)

    from .image_source import CHANNELS_TIP, SCALE_TIP, TILE_TIP

    w.scale_combo = QComboBox()
    w.scale_combo.addItems(["auto", "tile", "downscale"])
    w.scale_combo.setToolTip(SCALE_TIP)
    w.tile_spin = QSpinBox()
    w.tile_spin.setRange(0, 8192)
    w.tile_spin.setSingleStep(128)
    w.tile_spin.setSpecialValueText("model")
    w.tile_spin.setMinimumWidth(90)
    w.tile_spin.setToolTip(TILE_TIP)
    w.channels_combo = QComboBox()
    w.channels_combo.setToolTip(CHANNELS_TIP)
    srow = QHBoxLayout()
    srow.addWidget(w.scale_combo)
    srow.addWidget(QLabel("tile"))
    srow.addWidget(w.tile_spin, 1)
    form.addRow("Scale", srow)
    form.addRow("Channels", w.channels_combo)

    w.granularity_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
    w.granularity_slider.setRange(0.1, 1.0)
    w.granularity_slider.setSingleStep(0.01)
    w.granularity_slider.setDecimals(2)
    w.granularity_slider.setValue(0.5)
    w.granularity_slider.setToolTip("0.1 = the smallest part under the click ... 1.0 = the whole object "
                                    "(keys . and ,)")
    form.addRow("Granularity", w.granularity_slider)

    modes = QHBoxLayout()
    w.mode_buttons = {
        "click": _button("Click (K)", "clicks are point prompts (Shift+click: negative)", True),
        "box": _button("Box (B)", "drag a rectangle around the object", True),
        "scribble": _button("Scribble (D)", "draw a line over the object; points along it become prompts", True),
    }
    w.mode_buttons["click"].setChecked(True)
    for b in w.mode_buttons.values():
        modes.addWidget(b)
    form.addRow("Prompt", modes)
    w.negative_check = QCheckBox("negative (T)")
    w.negative_check.setToolTip("new clicks and scribbles mark background (or hold Shift while clicking)")
    w.live_check = QCheckBox("live preview")
    w.live_check.setChecked(True)
    w.live_check.setToolTip("preview after every prompt; off: place several prompts, then press Run (R)")
    w.refine_check = QCheckBox("refine label")
    w.refine_check.setToolTip("a click on an existing label of the Labels layer starts from that label's mask; "
                              "commit then replaces that label")
    checks = QHBoxLayout()
    for c in (w.negative_check, w.live_check, w.refine_check):
        checks.addWidget(c)
    form.addRow("", checks)
    outer.addLayout(form)

    buttons = QHBoxLayout()
    w.run_button = _button("Run (R)", "preview all prompts placed so far")
    w.commit_button = _button("Commit (C)", "write the preview into the Labels layer as a new label "
                                            "(waits for a preview still being computed)")
    w.next_button = _button("Next (N)", "discard the current prompts and preview")
    w.undo_button = _button("Undo", "undo the last commit or propagation (Ctrl+Z in the labels layer)")
    for b in (w.run_button, w.commit_button, w.next_button, w.undo_button):
        buttons.addWidget(b)
    outer.addLayout(buttons)

    stack_box = QGroupBox("Stacks (z or t) and tiled images")
    stack_row = QHBoxLayout(stack_box)
    w.embed_all_button = _button("Embed all", "compute every slice's (or, for a tiled image, every tile's) "
                                              "embedding now, so clicks anywhere only run the fast decoder")
    w.propagate_button = _button("Propagate (Shift+P)", "follow the last committed object through the stack")
    stack_row.addWidget(w.embed_all_button)
    stack_row.addWidget(w.propagate_button)
    outer.addWidget(stack_box)

    w.preview_busy = QProgressBar()
    w.preview_busy.setMaximumHeight(6)
    w.preview_busy.setTextVisible(False)
    w.preview_busy.setToolTip("the preview is being computed")
    w.progress = QProgressBar()
    w.progress.setToolTip("progress of the running task")
    w.cancel_button = _button("Cancel", "stop the running task (at the next slice)")
    prow = QHBoxLayout()
    prow.addWidget(w.progress, 1)
    prow.addWidget(w.cancel_button)
    outer.addWidget(w.preview_busy)
    outer.addLayout(prow)
    w.status = QLabel("")
    w.status.setWordWrap(True)
    w.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    w.status.setToolTip("what happened last and what to do next")
    outer.addWidget(w.status)

    w.help_button = _button("Help: shortcuts", "show or hide the list of shortcuts", True)
    w.help_label = QLabel(shortcuts_text())
    w.help_label.setWordWrap(True)
    w.help_label.setVisible(False)
    w.help_button.toggled.connect(w.help_label.setVisible)
    outer.addWidget(w.help_button)
    outer.addWidget(w.help_label)
    outer.addStretch(1)
