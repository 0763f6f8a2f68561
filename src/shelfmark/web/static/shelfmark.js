// Shelfmark's only script of its own: CSRF for htmx requests, and focus after a swap.
document.addEventListener("htmx:configRequest", (event) => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) event.detail.headers["X-CSRF-Token"] = meta.content;
});
document.addEventListener("htmx:afterSwap", () => {
  const target = document.querySelector("[data-autofocus]");
  if (target) target.focus();
});
