() => {
  const ex = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
  const grid = ex.grid; const c = grid.canvas;
  const d = document.createElement('div'); d.className = 'vl-bgheat';
  d.style.cssText = 'position:absolute;inset:0;image-rendering:pixelated;background-repeat:no-repeat;pointer-events:none';
  c.after(d);
  // every row of the current slice, drawn once into an offscreen canvas
  const sprite = document.createElement('canvas');
  let key = '', R = 1;
  const orig = grid.paint.bind(grid);
  grid.paint = (values, scale) => {
    orig(values, scale);
    const frame = ex.frame(); const q = ex.query(); const slice = ex.store.get(q);
    const k = `${q.image}|${q.site}|${q.metric}|${q.cls}`;
    if (k !== key && slice) {
      key = k; R = frame.site.layers.length;
      const [h, w] = frame.layout.grid; const T = frame.layout.n_tokens; const n = frame.layout.prefix.length;
      sprite.width = w; sprite.height = h * R;
      const ctx = sprite.getContext('2d'); const img = ctx.createImageData(w, h * R);
      for (let r = 0; r < R; r++) for (let i = 0; i < h * w; i++) { const v = slice[r * T + n + i]; if (!Number.isFinite(v)) continue; const at = (r * h * w + i) * 4; img.data.set(scale.colour(v), at); img.data[at + 3] = 0.55 * 255; }
      ctx.putImageData(img, 0, 0);
      d.style.backgroundImage = `url(${sprite.toDataURL()})`; d.style.backgroundSize = `100% ${R * 100}%`;
    }
    const row = frame.row; const p = `0% ${R > 1 ? (100 * row) / (R - 1) : 0}%`;
    if (d.style.backgroundPosition !== p) d.style.backgroundPosition = p;
  };
  ex.render();
}
