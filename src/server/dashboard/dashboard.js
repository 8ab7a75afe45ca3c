// memd dashboard (served at GET /, embedded in the binary).
//
// Reads this daemon's REST API only: memory_status and memory_pressure for
// the device cards, memory_analytics (detail=points) for each chart's first
// points, memory_blocks for the memory map, memory_model_status,
// memory_history, memory_transfer_status for a followed transfer, and the
// event stream (GET /api/memory/events) read with fetch() so the bearer
// token travels as a header (EventSource cannot send one). Every value that
// comes from the daemon is put into the page as text (textContent), never
// as markup: owner and allocation names are whatever clients chose.
//
// Numbers the page shows are also kept in data-* attributes (device cards,
// the map canvas) so a test can read them; window.memdDashboard exposes
// refresh() and benchmarkRedraw() for tests/browser/dashboard_test.py.
'use strict';
(() => {
  const POLL_MS = 1000;
  const SLOW_POLL_MS = 2000;
  const SERIES_POINTS = 600;
  const MAX_EVENTS = 200;
  const MAP_MAX_BLOCKS = 100000;

  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem('memd.token') || '',
    admin: sessionStorage.getItem('memd.admin') === 'true',
    devices: new Map(),   // deviceId -> {card, series: [{t, used, reserved, allocated}], total}
    selected: null,       // the map's device
    map: null,            // the last memory_blocks answer drawn
    mapLayout: null,      // for the tooltip: block offsets in layout order
    mapGeneration: 0,
    lastEvent: 0,
    events: 0,
    followed: new Map(),  // transferId -> last report
    stream: null,         // AbortController of the event stream
    refreshing: false,
    refreshAgain: false,
    lastSlow: 0,
    lastMap: 0,
  };

  // ---- helpers --------------------------------------------------------------

  const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  function bytes(n) {
    if (n === null || n === undefined || !isFinite(n)) return '–';
    let u = 0;
    let v = Number(n);
    while (Math.abs(v) >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
    return (u === 0 ? String(v) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)) + ' ' + UNITS[u];
  }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function row(cells) {
    const tr = document.createElement('tr');
    for (const c of cells) tr.appendChild(c instanceof Node ? wrapCell(c) : el('td', c));
    return tr;
  }
  function wrapCell(node) { const td = document.createElement('td'); td.appendChild(node); return td; }
  function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
  function sanitizeId(s) { return String(s).replace(/[^A-Za-z0-9_-]/g, '_'); }

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  function headers(json) {
    const h = {};
    if (state.token) h.Authorization = 'Bearer ' + state.token;
    // Other owners' blocks and history show by size only unless the caller
    // is the admin (docs/api.md, "Owners, the admin and sessions").
    if (state.admin) h['X-Memd-Admin'] = 'true';
    if (json) h['Content-Type'] = 'application/json';
    return h;
  }

  async function api(method, path, body) {
    const init = { method, headers: headers(body !== undefined), cache: 'no-store' };
    if (body !== undefined) init.body = JSON.stringify(body);
    const res = await fetch(path, init);
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) {
      const err = data && data.error ? data.error : { code: 'http_' + res.status, message: res.statusText };
      throw new ApiError(res.status, err.code, err.code + ': ' + err.message);
    }
    return data;
  }

  function setConnection(stateName, text) {
    const c = $('connection');
    c.dataset.state = stateName;
    c.textContent = text;
  }

  // ---- devices and their charts ----------------------------------------------

  function deviceCard(id) {
    let d = state.devices.get(id);
    if (d) return d;
    const card = el('div', null, 'device');
    card.id = 'device-' + sanitizeId(id);
    card.dataset.deviceId = id;
    const h = el('h3');
    h.appendChild(el('span', id, 'name'));
    h.appendChild(el('span', '', 'level'));
    card.appendChild(h);
    const nums = el('div', null, 'numbers');
    for (const [key, label] of [['used', 'used'], ['reserved', 'reserved by memd'], ['allocated', 'allocated'],
                                ['free', 'free']]) {
      const cell = el('div');
      cell.appendChild(el('b', label));
      const v = el('span', '–');
      v.dataset.field = key;
      cell.appendChild(v);
      nums.appendChild(cell);
    }
    card.appendChild(nums);
    const bar = el('div', null, 'bar');
    bar.appendChild(el('i', null, 'reserved'));
    bar.appendChild(el('i', null, 'allocated'));
    card.appendChild(bar);
    const chart = el('canvas', null, 'chart');
    chart.width = 600;
    chart.height = 110;
    card.appendChild(chart);
    $('device-list').appendChild(card);
    d = { card, chart, series: [], total: 0 };
    state.devices.set(id, d);
    loadSeries(id, d);
    for (const select of [$('map-device'), $('action-device')]) {
      const o = el('option', id);
      o.value = id;
      select.appendChild(o);
    }
    if (state.selected === null) { state.selected = id; $('map-device').value = id; }
    $('device-list').dataset.count = String(state.devices.size);
    return d;
  }

  // The chart's first points: the last 5 minutes at 1 s (memory_analytics).
  async function loadSeries(id, d) {
    try {
      const a = await api('GET', '/api/memory/analytics?detail=points&windowSeconds=300&resolution=1s&topOwners=0&deviceId=' +
                                 encodeURIComponent(id));
      const dev = (a.devices || []).find((x) => x.deviceId === id);
      if (!dev || !dev.points) return;
      const old = dev.points.map((p) => ({
        t: Date.parse(p.at),
        used: p.usedBytes ? p.usedBytes.mean : null,
        reserved: p.reservedBytes ? p.reservedBytes.mean : null,
        allocated: p.allocatedBytes ? p.allocatedBytes.mean : null,
      })).filter((p) => isFinite(p.t));
      const first = d.series.length ? d.series[0].t : Infinity;
      d.series = old.filter((p) => p.t < first).concat(d.series).slice(-SERIES_POINTS);
      drawChart(d);
    } catch (e) {
      // The chart still fills from polling; the error shows on the card.
      d.card.title = 'analytics: ' + e.message;
    }
  }

  function updateDevice(s, p) {
    const d = deviceCard(s.deviceId);
    const free = s.freeBytes;
    const fields = { used: s.usedBytes, reserved: s.reservedBytes, allocated: s.allocatedBytes, free };
    for (const [k, v] of Object.entries(fields)) d.card.querySelector(`[data-field="${k}"]`).textContent = bytes(v);
    const ds = d.card.dataset;
    ds.totalBytes = String(s.totalBytes);
    ds.usedBytes = String(s.usedBytes);
    ds.reservedBytes = String(s.reservedBytes);
    ds.allocatedBytes = String(s.allocatedBytes);
    ds.freeBytes = String(free);
    ds.allocations = String(s.allocations);
    ds.fragmentation = String(s.fragmentation);
    ds.health = s.health;
    const level = d.card.querySelector('.level');
    if (p) {
      ds.pressureLevel = p.level;
      ds.pressurePercent = String(p.percent);
      level.textContent = `${p.level} ${Number(p.percent).toFixed(1)}% · ${s.health} · frag ${(100 * s.fragmentation).toFixed(1)}%`;
      level.className = 'level level-' + p.level;
    }
    d.card.querySelector('.name').textContent = `${s.deviceId} — ${s.name || ''} (${bytes(s.totalBytes)})`;
    const total = s.totalBytes || 1;
    d.card.querySelector('.bar .reserved').style.width = (100 * s.reservedBytes / total).toFixed(2) + '%';
    d.card.querySelector('.bar .allocated').style.width = (100 * s.allocatedBytes / total).toFixed(2) + '%';
    d.total = s.totalBytes;
    d.series.push({ t: Date.now(), used: s.usedBytes, reserved: s.reservedBytes, allocated: s.allocatedBytes });
    if (d.series.length > SERIES_POINTS) d.series.splice(0, d.series.length - SERIES_POINTS);
    drawChart(d);
  }

  function fitCanvas(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    return dpr;
  }

  const SERIES_STYLE = [['used', '#9ca3af'], ['reserved', '#60a5fa'], ['allocated', '#1d4ed8']];
  function drawChart(d) {
    const c = d.chart;
    const dpr = fitCanvas(c);
    const ctx = c.getContext('2d');
    const W = c.width, H = c.height;
    ctx.clearRect(0, 0, W, H);
    const now = Date.now();
    const t0 = now - 300000;
    const pts = d.series.filter((p) => p.t >= t0);
    // The y scale: the device's total, or less when usage is a sliver of it,
    // so a change of a few MiB on a large card stays visible.
    let top = 0;
    for (const p of pts) for (const [k] of SERIES_STYLE) if (p[k] > top) top = p[k];
    top = Math.min(d.total || top, Math.max(top * 1.25, 1));
    ctx.font = `${10 * dpr}px system-ui, sans-serif`;
    ctx.fillStyle = '#6b7280';
    ctx.fillText(bytes(top), 4 * dpr, 11 * dpr);
    ctx.fillText('5 min', 4 * dpr, H - 3 * dpr);
    ctx.strokeStyle = '#eef0f3';
    ctx.beginPath();
    ctx.moveTo(0, H - 0.5); ctx.lineTo(W, H - 0.5);
    ctx.stroke();
    if (pts.length === 0) return;
    const x = (t) => ((t - t0) / 300000) * W;
    const y = (v) => H - (v / top) * (H - 14 * dpr) - 1;
    ctx.lineWidth = 1.5 * dpr;
    for (const [k, colour] of SERIES_STYLE) {
      ctx.strokeStyle = colour;
      ctx.beginPath();
      let started = false;
      for (const p of pts) {
        if (p[k] === null || p[k] === undefined) { started = false; continue; }
        if (!started) { ctx.moveTo(x(p.t), y(p[k])); started = true; } else ctx.lineTo(x(p.t), y(p[k]));
      }
      ctx.stroke();
    }
    let lx = W - 210 * dpr;
    for (const [k, colour] of SERIES_STYLE) {
      ctx.fillStyle = colour;
      ctx.fillRect(lx, 4 * dpr, 8 * dpr, 8 * dpr);
      ctx.fillStyle = '#374151';
      ctx.fillText(k, lx + 11 * dpr, 11 * dpr);
      lx += 70 * dpr;
    }
  }

  // ---- the memory map ---------------------------------------------------------
  //
  // Every segment is laid end to end in one line of bytes, wrapped into rows
  // of the canvas; each pixel of that line is a bucket of bytes. A block adds
  // its bytes to the buckets it covers, by state (and, for allocated blocks,
  // the owner covering most of the bucket), so 100,000 blocks of which many
  // share a pixel cost one pass over the blocks and one over the pixels: the
  // pixel shows what holds most of its bytes. Pixels are written into an
  // ImageData in one put.

  const STATES = ['allocated', 'free', 'pending', 'slab', 'omitted', 'unmapped'];
  const S_ALLOCATED = 0, S_FREE = 1, S_PENDING = 2, S_SLAB = 3, S_OMITTED = 4, S_UNMAPPED = 5;
  const NS = STATES.length;
  const STATE_INDEX = { allocated: S_ALLOCATED, free: S_FREE, pending: S_PENDING, slab: S_SLAB };
  const STATE_COLOUR = ['#1d4ed8', '#86efac', '#f59e0b', '#a855f7', '#d1d5db', '#f1f5f9'];
  // A free block is memd's, handed to no one: cached memory where mapped,
  // and, where a virtual arena has not mapped it (the segment's
  // mappedRanges), address space only.
  const STATE_LABEL = ['allocated (colour: owner)', 'free, cached (mapped)', 'pending (stream)', 'slab span',
                       'not listed (maxBlocks)', 'address space, not mapped'];
  const OWNER_COLOURS = ['#1d4ed8', '#dc2626', '#059669', '#d97706', '#7c3aed', '#db2777', '#0891b2', '#65a30d',
                         '#9333ea', '#ea580c', '#0f766e', '#be123c'];
  const HIDDEN_COLOUR = '#64748b';
  const ROW_GAP = 1;

  function packColour(hex) {  // '#rrggbb' -> 0xAABBGGRR (ImageData on little-endian)
    const v = parseInt(hex.slice(1), 16);
    return (0xff000000 | ((v & 0xff) << 16) | (v & 0xff00) | ((v >> 16) & 0xff)) >>> 0;
  }
  const STATE_PACKED = STATE_COLOUR.map(packColour);
  const OWNER_PACKED = OWNER_COLOURS.map(packColour);
  const HIDDEN_PACKED = packColour(HIDDEN_COLOUR);
  const BACKGROUND_PACKED = packColour('#ffffff');

  let buckets = null;  // reused between redraws: Float32Array(L * NS)
  let bucketOwner = null, bucketOwnerWeight = null;

  // Draws `map` (a memory_blocks answer) on `canvas`; returns what it drew.
  function drawMap(canvas, map) {
    const rowH = Math.max(2, Math.round(4 * (window.devicePixelRatio || 1)));
    const W = canvas.width, H = canvas.height;
    const rows = Math.max(1, Math.floor(H / rowH));
    const L = W * rows;
    if (!buckets || buckets.length !== L * NS) {
      buckets = new Float32Array(L * NS);
      bucketOwner = new Int32Array(L);
      bucketOwnerWeight = new Float32Array(L);
    } else {
      buckets.fill(0);
      bucketOwner.fill(0);
      bucketOwnerWeight.fill(0);
    }
    const segments = map.segments || [];
    let total = 0;
    for (const s of segments) total += s.sizeBytes;
    const scale = total > 0 ? L / total : 0;
    // Owners by bytes held in the listed blocks: the first get the palette.
    const ownerBytes = new Map();
    let blockCount = 0, allocatedBlocks = 0;
    for (const s of segments) for (const b of s.blocks) {
      blockCount++;
      if (b.state === 'allocated' || b.state === 'pending') {
        allocatedBlocks++;
        const o = b.allocation ? (b.allocation.hidden ? '(other owners)' : b.allocation.owner) : '(unnamed)';
        ownerBytes.set(o, (ownerBytes.get(o) || 0) + b.sizeBytes);
      }
    }
    const owners = [...ownerBytes.entries()].sort((a, b) => b[1] - a[1]).map((e) => e[0]);
    const ownerIndex = new Map(owners.map((o, i) => [o, i + 1]));
    const starts = new Float64Array(blockCount);  // layout offset of each listed block, for the tooltip
    const refs = new Array(blockCount);
    let k = 0;
    let base = 0;
    const segmentStarts = [];
    const add = (from, to, st, owner) => {
      // Bytes [from, to) of the line, in bucket units.
      const x0 = from * scale, x1 = Math.min(to * scale, L);
      let i = Math.floor(x0);
      if (i >= L) return;
      const last = Math.min(L - 1, Math.ceil(x1) - 1);
      for (; i <= last; i++) {
        const w = Math.min(x1, i + 1) - Math.max(x0, i);
        if (w <= 0) continue;
        buckets[i * NS + st] += w;
        if (owner && w > bucketOwnerWeight[i]) { bucketOwnerWeight[i] = w; bucketOwner[i] = owner; }
      }
    };
    for (const s of segments) {
      segmentStarts.push(base);
      let covered = 0;  // bytes of the segment its listed blocks cover
      const runs = s.mappedRanges;  // [address, bytes], in order; absent: backed whole
      let ri = 0;
      const segBase = base - s.address;
      for (const b of s.blocks) {
        const off = segBase + b.address;
        starts[k] = off;
        refs[k++] = [s, b];
        const st = STATE_INDEX[b.state] ?? S_ALLOCATED;
        covered += b.sizeBytes;
        if (st === S_FREE && runs) {
          // Split the free block into its mapped (cached) and unmapped parts;
          // blocks and runs are both in address order, so one pointer walks
          // the runs once per segment.
          let a = b.address;
          const end = b.address + b.sizeBytes;
          while (ri < runs.length && runs[ri][0] + runs[ri][1] <= a) ri++;
          let j = ri;
          while (a < end) {
            if (j >= runs.length || runs[j][0] >= end) { add(segBase + a, segBase + end, S_UNMAPPED, 0); break; }
            const r0 = runs[j][0], r1 = r0 + runs[j][1];
            if (r0 > a) { add(segBase + a, segBase + r0, S_UNMAPPED, 0); a = r0; }
            const e = Math.min(r1, end);
            add(segBase + a, segBase + e, S_FREE, 0);
            a = e;
            if (a >= r1) j++;
          }
          continue;
        }
        let owner = 0;
        if (b.allocation) owner = ownerIndex.get(b.allocation.hidden ? '(other owners)' : b.allocation.owner) || 0;
        else if (st === S_ALLOCATED || st === S_PENDING) owner = ownerIndex.get('(unnamed)') || 0;
        add(off, off + b.sizeBytes, st, owner);
      }
      // Blocks left out by maxBlocks: the rest of the segment, drawn as such.
      if (covered < s.sizeBytes && s.blocks.length < s.blockCount) {
        const lastEnd = s.blocks.length ? s.blocks[s.blocks.length - 1].address + s.blocks[s.blocks.length - 1].sizeBytes - s.address : 0;
        add(base + lastEnd, base + s.sizeBytes, S_OMITTED, 0);
      }
      base += s.sizeBytes;
    }
    const ctx = canvas.getContext('2d');
    const img = ctx.createImageData(W, H);
    const px = new Uint32Array(img.data.buffer);
    px.fill(BACKGROUND_PACKED);
    for (let i = 0; i < L; i++) {
      let best = -1, bestW = 0;
      for (let st = 0; st < NS; st++) {
        const w = buckets[i * NS + st];
        if (w > bestW) { bestW = w; best = st; }
      }
      if (best < 0) continue;
      let colour = STATE_PACKED[best];
      if (best === S_ALLOCATED || best === S_PENDING) {
        const o = bucketOwner[i];
        if (o > 0) {
          const name = owners[o - 1];
          colour = name === '(other owners)' ? HIDDEN_PACKED : OWNER_PACKED[(o - 1) % OWNER_PACKED.length];
        }
        if (best === S_PENDING) colour = STATE_PACKED[S_PENDING];
      }
      const r = (i / W) | 0, x = i - r * W;
      const y0 = r * rowH;
      for (let y = y0; y < y0 + rowH - ROW_GAP; y++) px[y * W + x] = colour;
    }
    ctx.putImageData(img, 0, 0);
    // Segment starts: a dark tick, so the eye tells segments apart.
    ctx.fillStyle = '#111827';
    for (const s0 of segmentStarts) {
      const i = Math.floor(s0 * scale);
      const r = (i / W) | 0, x = i - r * W;
      ctx.fillRect(x, r * rowH, Math.max(1, Math.round(window.devicePixelRatio || 1)), rowH - ROW_GAP);
    }
    return { blockCount, allocatedBlocks, owners, starts, refs, scale, rowH, W, total };
  }

  function renderLegend(owners) {
    const legend = $('map-legend');
    legend.textContent = '';
    const item = (colour, label) => {
      const s = el('span');
      const i = el('i');
      i.style.background = colour;
      s.appendChild(i);
      s.appendChild(document.createTextNode(label));
      legend.appendChild(s);
    };
    for (let st = 1; st < NS; st++) item(STATE_COLOUR[st], STATE_LABEL[st]);
    owners.slice(0, 24).forEach((o, i) => item(o === '(other owners)' ? HIDDEN_COLOUR : OWNER_COLOURS[i % OWNER_COLOURS.length],
                                                'owner ' + o));
  }

  function showMap(map) {
    const canvas = $('blockmap');
    fitCanvas(canvas);
    const t0 = performance.now();
    const drawn = drawMap(canvas, map);
    const ms = performance.now() - t0;
    state.map = map;
    state.mapLayout = drawn;
    state.mapGeneration++;
    const ds = canvas.dataset;
    ds.deviceId = map.deviceId;
    ds.blockCount = String(drawn.blockCount);
    ds.blockTotal = String(map.blockCount);
    ds.blocksOmitted = String(map.blocksOmitted);
    ds.allocatedBlocks = String(drawn.allocatedBlocks);
    ds.liveBytes = String(map.liveBytes);
    ds.freeBytes = String(map.freeBytes);
    ds.mappedBytes = String(map.mappedBytes);
    ds.segmentBytes = String(map.segmentBytes);
    ds.fragmentation = String(map.fragmentation);
    ds.redrawMs = ms.toFixed(2);
    ds.generation = String(state.mapGeneration);
    $('map-stats').textContent =
        `${map.blockCount} blocks (${map.blocksOmitted} not listed) in ${map.segments.length} segments · ` +
        `mapped ${bytes(map.mappedBytes)} of ${bytes(map.segmentBytes)} address space · live ${bytes(map.liveBytes)} · ` +
        `cached ${bytes(map.freeBytes)} · `+
        `largest free ${bytes(map.largestFreeBytes)} · fragmentation ${(100 * map.fragmentation).toFixed(1)}% · ` +
        `drawn in ${ms.toFixed(1)} ms`;
    renderLegend(drawn.owners);
  }

  function mapTooltip(ev) {
    const tip = $('map-tip');
    const lay = state.mapLayout;
    const canvas = $('blockmap');
    if (!lay || lay.starts.length === 0 || lay.scale === 0) { tip.hidden = true; return; }
    const rect = canvas.getBoundingClientRect();
    const x = Math.floor((ev.clientX - rect.left) * canvas.width / rect.width);
    const y = Math.floor((ev.clientY - rect.top) * canvas.height / rect.height);
    const i = Math.floor(y / lay.rowH) * lay.W + x;
    const off = (i + 0.5) / lay.scale;
    let lo = 0, hi = lay.starts.length - 1;
    while (lo < hi) {  // the last block starting at or before off
      const mid = (lo + hi + 1) >> 1;
      if (lay.starts[mid] <= off) lo = mid; else hi = mid - 1;
    }
    const [s, b] = lay.refs[lo];
    const a = b.allocation;
    let text = `${b.state} ${bytes(b.sizeBytes)} at 0x${b.address.toString(16)}\n` +
               `segment ${s.kind} ${s.memoryType} ${bytes(s.sizeBytes)}` +
               (s.mappedBytes !== undefined ? `, ${bytes(s.mappedBytes)} mapped` : '');
    if (a) text += a.hidden ? '\nanother owner\'s allocation' : `\nowner ${a.owner}\nname ${a.name || '–'}\n${a.allocationId}`;
    if (b.state === 'slab') text += `\n${b.slabAllocations} small allocations`;
    const perPixel = 1 / lay.scale;
    text += `\n(one pixel: ${bytes(perPixel)})`;
    tip.textContent = text;
    tip.hidden = false;
    tip.style.left = Math.min(ev.clientX - rect.left + 12, rect.width - 260) + 'px';
    tip.style.top = (ev.clientY - rect.top + 12) + 'px';
  }

  // A synthetic map of n blocks in 8 segments (a fixed seed: every run draws
  // the same; mapped in runs like a virtual arena), for benchmarkRedraw.
  function syntheticMap(n) {
    let seed = 12345;
    const rand = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; };
    const segs = [];
    const per = Math.ceil(n / 8);
    let made = 0, addr = 0x7f0000000000;
    for (let s = 0; s < 8 && made < n; s++) {
      const seg = { memoryType: 'VRAM', kind: 'arena', address: addr, sizeBytes: 0, blockCount: 0, blocks: [] };
      let a = addr;
      for (let j = 0; j < per && made < n; j++, made++) {
        const size = 512 * (1 + Math.floor(rand() * rand() * 4096));
        const r = rand();
        const st = r < 0.6 ? 'allocated' : r < 0.9 ? 'free' : r < 0.97 ? 'slab' : 'pending';
        const b = { address: a, sizeBytes: size, state: st, allocation: null };
        if (st === 'allocated' || st === 'pending') {
          const o = Math.floor(rand() * 20);
          b.allocation = { owner: 'owner-' + o, name: 'block-' + made, hidden: o >= 16, allocationId: null };
        }
        if (st === 'slab') b.slabAllocations = 8;
        seg.blocks.push(b);
        a += size;
      }
      seg.sizeBytes = a - addr;
      seg.blockCount = seg.blocks.length;
      // Mapped like a virtual arena: 6 MiB of every 8 MiB, so free blocks
      // are split into cached and unmapped parts as a real map's are.
      seg.mappedRanges = [];
      for (let m = addr; m < a; m += 8 * 1048576) seg.mappedRanges.push([m, Math.min(6 * 1048576, a - m)]);
      segs.push(seg);
      addr = a + (1 << 30);
    }
    return { deviceId: 'synthetic', segments: segs, blockCount: made, blocksOmitted: 0 };
  }

  // Redraws a synthetic map of n blocks `runs` times on the map's canvas and
  // times each (layout from the JSON objects, buckets, pixels, put, and a
  // one-pixel read back so the draw has really happened), then draws the
  // live map again. The test prints what this returns.
  function benchmarkRedraw(n = 100000, runs = 5) {
    const canvas = $('blockmap');
    fitCanvas(canvas);
    const map = syntheticMap(n);
    const times = [];
    let drawn = null;
    for (let r = 0; r < runs; r++) {
      const t0 = performance.now();
      drawn = drawMap(canvas, map);
      canvas.getContext('2d').getImageData(0, 0, 1, 1);
      times.push(performance.now() - t0);
    }
    if (state.map) showMap(state.map);
    const sorted = [...times].sort((a, b) => a - b);
    return {
      blocks: drawn.blockCount,
      runs,
      firstMs: times[0],
      medianMs: sorted[Math.floor(sorted.length / 2)],
      minMs: sorted[0],
      maxMs: sorted[sorted.length - 1],
      canvas: [canvas.width, canvas.height],
      pixelsPerRow: canvas.width,
      rows: Math.floor(canvas.height / drawn.rowH),
    };
  }

  // ---- models, transfers, history, events ----------------------------------

  function renderModels(m) {
    const body = $('models').querySelector('tbody');
    body.textContent = '';
    const models = (m.models || []).slice();
    const order = { VRAM: 0, RAM: 1, Disk: 2 };
    models.sort((a, b) => (order[a.tier] ?? 9) - (order[b.tier] ?? 9) || String(a.name).localeCompare(b.name));
    for (const x of models) {
      const p = x.progress || {};
      const bar = el('progress');
      bar.max = p.bytesTotal || 1;
      bar.value = p.bytesDone || 0;
      const load = el('span');
      load.appendChild(bar);
      load.appendChild(document.createTextNode(` ${p.stage || ''} ${bytes(p.bytesDone)} / ${bytes(p.bytesTotal)}`));
      const tr = row([x.tier || '–', x.name, x.state, x.deviceId || '–', bytes(x.sizeBytes), load]);
      tr.dataset.model = x.name;
      tr.dataset.tier = x.tier || '';
      body.appendChild(tr);
    }
    $('models').dataset.count = String(models.length);
    $('models-summary').textContent = `${models.length} models · RAM cache ${bytes(m.ramCacheBytes)}`;
  }

  function renderTransfers(status) {
    const t = status.transfers || {};
    const c = $('transfer-counters');
    c.textContent = `in progress ${t.inProgress ?? 0} · pending ${t.pending ?? 0} · submitted ${t.submitted ?? 0} · ` +
                    `completed ${t.completed ?? 0} · failed ${t.failed ?? 0} · cancelled ${t.cancelled ?? 0} · ` +
                    `copied ${bytes(t.bytesCopied)}`;
    c.dataset.inProgress = String(t.inProgress ?? 0);
    c.dataset.pending = String(t.pending ?? 0);
    const body = $('transfers').querySelector('tbody');
    body.textContent = '';
    for (const [id, r] of state.followed) {
      if (r.error && !r.status) { body.appendChild(row([id, '–', r.error, '', '', ''])); continue; }
      const bar = el('progress');
      bar.max = 1;
      bar.value = r.progress || 0;
      const route = `${r.sourceDeviceId || ''} → ${r.destinationDeviceId || ''}`;
      body.appendChild(row([id, r.kind || (r.batchId === undefined ? 'batch' : ''), r.status, bar, route,
                            r.rateBytesPerSecond ? bytes(r.rateBytesPerSecond) + '/s' : '–']));
    }
  }

  async function refreshFollowed() {
    for (const id of state.followed.keys()) {
      try { state.followed.set(id, await api('GET', '/api/memory/transfers/' + encodeURIComponent(id))); }
      catch (e) { state.followed.set(id, { error: e.message }); }
    }
  }

  function renderHistory(h) {
    const body = $('history').querySelector('tbody');
    body.textContent = '';
    const entries = (h.entries || []).slice().reverse();
    for (const e of entries) {
      const tr = row([e.sequence, (e.time || '').replace('T', ' ').replace('Z', ''), e.kind, e.deviceId,
                      e.hidden ? '(hidden)' : e.owner, e.hidden ? '' : (e.name || ''), bytes(e.sizeBytes),
                      bytes(e.allocatedBytes)]);
      tr.dataset.kind = e.kind;
      if (e.allocationId) tr.dataset.allocationId = e.allocationId;
      body.appendChild(tr);
    }
    $('history').dataset.count = String(entries.length);
    $('history').dataset.lastSequence = entries.length ? String(entries[0].sequence) : '0';
  }

  function addEvent(kind, ev) {
    const list = $('events');
    const d = ev.data || {};
    let what = '';
    if (kind === 'pressure_changed') what = `${d.previousLevel} → ${d.level} (${d.percent}%)`;
    else if (kind === 'model_progress') what = `${d.name || ''} ${d.stage || ''} ${bytes(d.bytesDone)} / ${bytes(d.bytesTotal)}`;
    else if (kind === 'lost') what = `lost ${d.lost} events`;
    else if (kind === 'transfer_completed' || kind === 'transfer_failed')
      what = `${d.kind || ''} ${bytes(d.sizeBytes)} ${d.sourceDeviceId || ''} → ${d.destinationDeviceId || ''} ${d.status || ''}`;
    else what = JSON.stringify(d).slice(0, 160);
    const time = ev.time ? ev.time.slice(11, 23) : new Date().toISOString().slice(11, 23);
    const li = el('li', `${time} ${kind} ${ev.deviceId || ''} ${what}`);
    li.dataset.kind = kind;
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX_EVENTS) list.removeChild(list.lastChild);
    state.events++;
    list.dataset.count = String(state.events);
    $('events-count').textContent = `${state.events} since the page opened`;
  }

  // The event stream, read with fetch so the token goes as a header; on a
  // break it reconnects from the last sequence seen (lastEventId).
  async function streamEvents() {
    for (;;) {
      const abort = new AbortController();
      state.stream = abort;
      try {
        const q = state.lastEvent ? '?lastEventId=' + state.lastEvent : '';
        const res = await fetch('/api/memory/events' + q, { headers: headers(false), cache: 'no-store', signal: abort.signal });
        if (!res.ok) {
          let msg = 'HTTP ' + res.status;
          try { const j = await res.json(); msg = j.error.code + ': ' + j.error.message; } catch (e) { /* not JSON */ }
          throw new Error(msg);
        }
        setConnection('live', 'live');
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            onSseMessage(buf.slice(0, cut));
            buf = buf.slice(cut + 2);
          }
        }
        setConnection('error', 'event stream closed; reconnecting');
      } catch (e) {
        if (abort.signal.aborted) continue;  // a new token: reconnect at once
        setConnection('error', 'events: ' + e.message);
      }
      await sleep(2000);
    }
  }

  function onSseMessage(text) {
    let kind = 'message', data = '', id = null;
    for (const line of text.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') kind = value;
      else if (field === 'data') data += (data ? '\n' : '') + value;
      else if (field === 'id') id = value;
    }
    if (!data) return;
    if (id !== null && /^\d+$/.test(id)) state.lastEvent = Number(id);
    let ev;
    try { ev = JSON.parse(data); } catch (e) { return; }
    addEvent(kind, kind === 'lost' ? { data: ev } : ev);
    // A finished transfer's event carries its whole report: it joins the
    // transfers table (the newest 20), as a followed id would.
    if ((kind === 'transfer_completed' || kind === 'transfer_failed') && ev.data && ev.data.transferId) {
      state.followed.set(ev.data.transferId, ev.data);
      while (state.followed.size > 20) state.followed.delete(state.followed.keys().next().value);
    }
    scheduleRefresh();
  }

  // ---- polling ------------------------------------------------------------

  let refreshTimer = null;
  function scheduleRefresh() {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 150);
  }

  // One round: status and pressure (cards, charts), the selected device's
  // map, and every few seconds models and history. Errors show in the
  // header; the next round tries again.
  async function refresh() {
    if (state.refreshing) { state.refreshAgain = true; return; }
    state.refreshing = true;
    try {
      const [status, pressure] = await Promise.all([api('GET', '/api/memory/status'), api('GET', '/api/memory/pressure')]);
      const levels = new Map((pressure.devices || []).map((p) => [p.deviceId, p]));
      for (const s of status.devices || []) updateDevice(s, levels.get(s.deviceId));
      $('health').textContent = 'health ' + status.health;
      // The map walks every block of the device under its pools' locks:
      // a large one is asked for less often.
      const now = Date.now();
      const mapEvery = state.map && state.map.blockCount > 20000 ? 5000 : 0;
      if (state.selected && (now - state.lastMap >= mapEvery || state.map.deviceId !== state.selected)) {
        state.lastMap = now;
        const map = await api('GET', `/api/memory/blocks/${encodeURIComponent(state.selected)}?maxBlocks=${MAP_MAX_BLOCKS}`);
        showMap(map);
      }
      if (now - state.lastSlow >= SLOW_POLL_MS || state.refreshAgain) {
        state.lastSlow = now;
        const [models, history] = await Promise.all([
          api('GET', '/api/memory/models').catch((e) => ({ models: [], error: e })),
          api('GET', '/api/memory/history?limit=100'),
        ]);
        renderModels(models);
        renderHistory(history);
        await refreshFollowed();
      }
      renderTransfers(status);
      if ($('connection').dataset.state !== 'live') setConnection('polling', 'polling');
    } catch (e) {
      setConnection('error', e.message + (e.status === 401 ? ' — enter the token above' : ''));
    } finally {
      state.refreshing = false;
      if (state.refreshAgain) { state.refreshAgain = false; scheduleRefresh(); }
    }
  }

  async function runAction(label, path, body) {
    const out = $('action-result');
    out.dataset.state = 'running';
    out.textContent = label + '…';
    try {
      const r = await api('POST', path, body);
      out.dataset.state = 'ok';
      out.textContent = label + ': ' + JSON.stringify(r, null, 1);
    } catch (e) {
      out.dataset.state = 'error';
      out.dataset.status = String(e.status || '');
      out.textContent = label + ' refused: ' + e.message +
                        (e.status === 401 ? '\n(enter the bearer token above)' : '') +
                        (e.status === 403 ? '\n(this token may not do that)' : '');
    }
    scheduleRefresh();
  }

  // ---- wiring ---------------------------------------------------------------

  $('token').value = state.token;
  $('admin').checked = state.admin;
  $('admin').addEventListener('change', () => {
    state.admin = $('admin').checked;
    sessionStorage.setItem('memd.admin', String(state.admin));
    if (state.stream) state.stream.abort();
    state.refreshAgain = true;
    refresh();
  });
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = $('token').value.trim();
    sessionStorage.setItem('memd.token', state.token);
    if (state.stream) state.stream.abort();
    refresh();
  });
  $('map-device').addEventListener('change', () => { state.selected = $('map-device').value; refresh(); });
  $('blockmap').addEventListener('mousemove', mapTooltip);
  $('blockmap').addEventListener('mouseleave', () => { $('map-tip').hidden = true; });
  $('defragment').addEventListener('click', () => {
    const d = $('action-device').value;
    runAction('defragment', '/api/memory/defragment', d ? { deviceId: d } : {});
  });
  $('optimize').addEventListener('click', () => runAction('optimize', '/api/memory/optimize', {}));
  $('transfer-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = $('transfer-id').value.trim();
    if (id) { state.followed.set(id, { status: 'asking…' }); state.refreshAgain = true; refresh(); }
  });
  window.addEventListener('resize', () => { if (state.map) showMap(state.map); });

  window.memdDashboard = { refresh, benchmarkRedraw, state };
  renderLegend([]);
  refresh();
  setInterval(refresh, POLL_MS);
  streamEvents();
})();
