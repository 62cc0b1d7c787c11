// The retrieval explorer's drawing pad: the front end of dsn_lab.widgets.drawing_pad (an anywidget ES module).
// Strokes go on a <canvas>; when the pen lifts, the whole canvas goes to Python as a PNG data URL in the
// synced trait "value" ("" after "clear drawing"). Python setting "value" redraws every view of the pad.

function render({ model, el }) {
  const size = model.get("size");
  const box = document.createElement("div");
  box.className = "dsn-pad";
  const canvas = document.createElement("canvas");
  canvas.width = size;
  canvas.height = size;
  canvas.style.cssText =
    `width:${size}px;height:${size}px;display:block;background:#fff;border:1px solid #888;` +
    "touch-action:none;cursor:crosshair";
  const clear = document.createElement("button");
  clear.type = "button";
  clear.className = "dsn-clear";
  clear.textContent = "clear drawing";
  box.append(canvas, clear);
  el.appendChild(box);

  const ctx = canvas.getContext("2d");
  let pen = null; // pointer id of the stroke being drawn
  let sent = model.get("value"); // what this view last sent: its own echo must not repaint the canvas

  function send(value) {
    sent = value;
    model.set("value", value);
    model.save_changes();
  }

  function at(e) {
    // pointer position in canvas pixels (the element may be scaled by CSS or page zoom)
    const r = canvas.getBoundingClientRect();
    return [((e.clientX - r.left) * canvas.width) / r.width, ((e.clientY - r.top) * canvas.height) / r.height];
  }

  function down(e) {
    if (e.button > 0) return; // primary button, pen or touch only
    pen = e.pointerId;
    const [x, y] = at(e);
    ctx.lineWidth = 4;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.strokeStyle = "#000";
    ctx.beginPath();
    ctx.moveTo(x, y);
    ctx.lineTo(x + 0.1, y); // a click alone leaves a dot
    ctx.stroke();
    try {
      canvas.setPointerCapture(e.pointerId); // keep the stroke when the pointer leaves the box
    } catch (err) {
      // an old browser without pointer capture: the stroke ends at the border instead
    }
    e.preventDefault();
  }

  function move(e) {
    if (e.pointerId !== pen) return;
    const [x, y] = at(e);
    ctx.lineTo(x, y);
    ctx.stroke();
    e.preventDefault();
  }

  function up(e) {
    if (e.pointerId !== pen) return;
    pen = null;
    send(canvas.toDataURL("image/png"));
  }

  function paint(value) {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!value) return;
    const img = new Image();
    img.onload = () => {
      if (model.get("value") === value) ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    };
    img.src = value;
  }

  function changed() {
    const value = model.get("value");
    if (value === sent) return;
    sent = value;
    paint(value);
  }

  canvas.addEventListener("pointerdown", down);
  canvas.addEventListener("pointermove", move);
  canvas.addEventListener("pointerup", up);
  canvas.addEventListener("pointercancel", up);
  clear.addEventListener("click", () => {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    send("");
  });
  paint(sent);
  model.on("change:value", changed);
  return () => model.off("change:value", changed);
}

export default { render };
