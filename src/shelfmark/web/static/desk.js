// The desk's "Recent activity": checkouts and checkins at the other desks of this branch,
// from the live events stream (server-sent events; the browser reconnects by itself).
(() => {
  const list = document.getElementById("activity");
  if (!list || !window.EventSource) return;
  const empty = document.querySelector("[data-activity-empty]");
  const SHOWN = 20;
  const OWN_SECONDS = 60;
  // Barcodes scanned at this desk a moment ago: their events are this desk's own.
  const own = new Set();
  document.addEventListener("htmx:beforeRequest", (event) => {
    const field = event.detail.elt.querySelector && event.detail.elt.querySelector('[name="barcode"]');
    if (field && field.value) {
      const barcode = field.value.trim();
      own.add(barcode);
      setTimeout(() => own.delete(barcode), OWN_SECONDS * 1000);
    }
  });
  const describe = {
    "loan.created": (p) => `Checked out ${p.item_barcode}, due ${p.due_at.slice(0, 10)}`,
    "item.returned": (p) => `Checked in ${p.item_barcode}`,
  };
  const source = new EventSource(list.dataset.events);
  for (const [name, text] of Object.entries(describe)) {
    source.addEventListener(name, (message) => {
      const event = JSON.parse(message.data);
      if (own.has(event.payload.item_barcode)) return;
      const item = document.createElement("li");
      const at = new Date(event.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      item.textContent = `${at} ${text(event.payload)}`;
      list.prepend(item);
      while (list.children.length > SHOWN) list.lastElementChild.remove();
      if (empty) empty.hidden = true;
    });
  }
  window.addEventListener("pagehide", () => source.close());
})();
