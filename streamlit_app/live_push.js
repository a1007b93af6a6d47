// The page's half of the live push (push.py): follows the server's stream of newest
// prices and writes each into the markets table and heatmap as it comes. Those are HTML
// the live fragment redraws every DASHBOARD_LIVE_REFRESH_SECONDS (charts.py); whatever it
// redraws older than a price already pushed is overwritten as soon as it appears, so the
// page never steps back. Colours and order stay the fragment's.
//
// One hub per page (window.finpipeLivePush): Streamlit calls this function on every
// render of the component; the hub keeps one stream whatever the number of calls.

const STATUS = {
  idle: "",
  connecting: "○ live prices: connecting…",
  open: "● live prices streaming",
  retrying: "○ live prices: reconnecting…",
  down: "○ no live prices: the feed is down",
};

const REOPEN_MS = 5000;

// As tables.change_text: "+1.23 %", "-0.40 %".
function changeText(pct) {
  return `${pct < 0 || Object.is(pct, -0) ? "-" : "+"}${Math.abs(pct).toFixed(2)} %`;
}

function newer(update, shownMs, shownReceivedMs) {
  return update.t > shownMs || (update.t === shownMs && update.r > shownReceivedMs);
}

function applyRow(row, update) {
  const shownMs = Number(row.dataset.tradeMs || 0);
  if (!newer(update, shownMs, Number(row.dataset.receivedMs || 0))) return false;
  row.dataset.price = String(update.p);
  row.dataset.tradeMs = String(update.t);
  row.dataset.receivedMs = String(update.r);
  row.querySelector("td.price").textContent = update.pt;
  row.querySelector("td.time").textContent = update.tt;
  const open = Number(row.dataset.open);
  if (open > 0) {
    const pct = (update.p / open - 1) * 100;
    row.dataset.change = String(pct);
    const cell = row.querySelector("td.change");
    cell.textContent = changeText(pct);
    cell.classList.toggle("up", pct > 0);
    cell.classList.toggle("down", pct < 0);
  }
  return true;
}

function applyCell(cell, row) {
  // the heatmap's cell of a row's symbol: its change text (its colour is the fragment's)
  if (!row.dataset.change) return;
  const text = changeText(Number(row.dataset.change));
  const change = cell.querySelector(".change");
  if (change && change.textContent !== text) {
    change.textContent = text;
    cell.title = `${cell.dataset.symbol} ${text}`;
  }
}

// Whether a mutation is in or around the markets table or heatmap (``watched``: their
// selectors, as charts.py names their classes and push.py passes them).
function touches(record, watched) {
  const target = record.target;
  if (target.nodeType === Node.ELEMENT_NODE && target.closest(watched)) return true;
  for (const node of record.addedNodes) {
    if (node.nodeType !== Node.ELEMENT_NODE) continue;
    if (node.matches(watched) || node.querySelector(watched)) return true;
  }
  return false;
}

function createHub() {
  const latest = new Map(); // symbol -> the newest update received
  const hub = { source: null, path: null, status: "idle" };
  hub.select = (data) => {
    hub.statusLine = `.${data.status}`;
    hub.markets = `.${data.markets}`;
    hub.heatmap = `.${data.heatmap}`;
    hub.watched = `${hub.markets}, ${hub.heatmap}`;
  };

  hub.apply = (symbols) => {
    const table = document.querySelector(hub.markets);
    if (!table) return;
    let newestReceived = 0;
    const rows = new Map();
    for (const row of table.querySelectorAll("tr[data-symbol]")) {
      const symbol = row.dataset.symbol;
      rows.set(symbol, row);
      const update = latest.get(symbol);
      if (!update || (symbols && !symbols.has(symbol))) continue;
      if (applyRow(row, update)) newestReceived = Math.max(newestReceived, update.r);
    }
    const grid = document.querySelector(hub.heatmap);
    if (!grid) return;
    for (const cell of grid.querySelectorAll(".cell[data-symbol]")) {
      const row = rows.get(cell.dataset.symbol);
      if (row) applyCell(cell, row);
    }
    if (newestReceived > Number(grid.dataset.newestReceivedMs || 0)) {
      grid.dataset.newestReceivedMs = String(newestReceived);
      grid.dataset.source = "live";
    }
  };

  hub.setStatus = (status) => {
    hub.status = status;
    for (const line of document.querySelectorAll(hub.statusLine)) {
      line.textContent = STATUS[status];
    }
  };

  hub.follow = (path) => {
    if (hub.source && hub.path === path) return;
    hub.stop();
    hub.path = path;
    hub.setStatus("connecting");
    const source = new EventSource(new URL(path, document.baseURI));
    source.onopen = () => hub.setStatus("open");
    source.onerror = () => {
      latest.clear(); // until it is back, the fragment's prices
      hub.setStatus("retrying");
      // EventSource reconnects by itself after a network error, not after an answer
      // other than the stream (a proxy's 502 while the server restarts): then, here
      if (source.readyState === EventSource.CLOSED && hub.source === source) {
        hub.source = null;
        setTimeout(() => {
          if (hub.path === path && !hub.source) {
            hub.path = null;
            hub.follow(path);
          }
        }, REOPEN_MS);
      }
    };
    // the feed is down or (re)connecting: what was pushed goes, the fragment's lake stays
    for (const status of ["down", "connecting"]) {
      source.addEventListener(status, () => {
        latest.clear();
        hub.setStatus(status);
      });
    }
    source.onmessage = (event) => {
      if (hub.status !== "open") hub.setStatus("open");
      const symbols = new Set();
      for (const update of JSON.parse(event.data)) {
        latest.set(update.s, update);
        symbols.add(update.s);
      }
      hub.apply(symbols);
    };
    hub.source = source;
  };

  hub.stop = () => {
    if (hub.source) hub.source.close();
    hub.source = null;
    hub.path = null;
    hub.setStatus("idle");
  };

  // The fragment's redraws replace the table and heatmap: write what was pushed into them
  // at once, before anything else reads or paints them. (What this writes comes back as
  // mutations once: nothing is newer then, nothing is written.)
  // Only mutations in or around them count: the rest of the page (Plotly's charts above
  // all) changes far more often, and a first page is built of thousands of them.
  new MutationObserver((records) => {
    if (latest.size && records.some((r) => touches(r, hub.watched))) hub.apply(null);
  }).observe(document.body, { childList: true, subtree: true });
  return hub;
}

export default function (component) {
  const { data } = component;
  window.finpipeLivePush ??= createHub();
  const hub = window.finpipeLivePush;
  hub.select(data);
  if (data.on) hub.follow(data.path);
  else hub.stop();
  hub.setStatus(hub.status); // a status line drawn again since
}
