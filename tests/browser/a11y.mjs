// The accessibility checks the browser tests share (a11y.test.mjs, alerts-ui.test.mjs): WCAG 2.2
// AA contrast of every visible text (run in the page), and the visible controls without an
// accessible name in Chromium's accessibility tree (what a screen reader announces).

/** Text elements whose contrast is below the WCAG 2.2 AA minimum (run in the page). */
export function lowContrast() {
  const parse = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return { r, g, b, a };
  };
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a),
    a: 1,
  });
  const lum = ({ r, g, b }) => {
    const f = (v) => { const s = v / 255; return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const cs = getComputedStyle(e);
      if (cs.backgroundImage !== 'none') return null; // gradients and images: not judged here
      const c = parse(cs.backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let bg = { r: 255, g: 255, b: 255, a: 1 };
    for (const c of layers.reverse()) bg = over(c, bg);
    return bg;
  };
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || seen.has(el) || !n.textContent.trim()) continue;
    seen.add(el);
    if (el.closest('[hidden], [aria-hidden="true"], canvas, svg, noscript, script, style')) continue;
    const r = el.getBoundingClientRect();
    const cs = getComputedStyle(el);
    if (r.width === 0 || r.height === 0 || cs.visibility === 'hidden' || Number(cs.opacity) === 0) continue;
    if (el.closest('button:disabled, input:disabled, select:disabled')) continue; // WCAG exempts inactive controls
    let op = 1;
    for (let e = el; e; e = e.parentElement) op *= Number(getComputedStyle(e).opacity);
    const bg = background(el);
    const fgc = parse(cs.color);
    if (!bg || !fgc) continue;
    const fg = over({ ...fgc, a: fgc.a * op }, bg);
    const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(cs.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(cs.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      bad.push(`${ratio.toFixed(2)}:1 "${n.textContent.trim().slice(0, 40)}" <${el.tagName.toLowerCase()} class="${el.className}"> ${cs.color} on rgb(${Math.round(bg.r)},${Math.round(bg.g)},${Math.round(bg.b)})`);
    }
  }
  return bad;
}

/** Visible controls without an accessible name, from Chromium's accessibility tree. */
export async function unnamed(page) {
  const cdp = await page.context().newCDPSession(page);
  const { nodes } = await cdp.send('Accessibility.getFullAXTree');
  const roles = new Set(['button', 'textbox', 'combobox', 'searchbox', 'checkbox', 'radio', 'link', 'slider', 'spinbutton', 'listbox', 'switch', 'tab']);
  return nodes
    .filter((n) => !n.ignored && roles.has(n.role?.value) && !(n.name?.value || '').trim())
    .map((n) => `${n.role.value} (backend node ${n.backendDOMNodeId})`);
}
