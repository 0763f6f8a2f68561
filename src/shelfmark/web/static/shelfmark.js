// Shelfmark's only script of its own: CSRF for htmx requests, and focus after a swap.
document.addEventListener("htmx:configRequest", (event) => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) event.detail.headers["X-CSRF-Token"] = meta.content;
});
document.addEventListener("htmx:afterSwap", () => {
  const target = document.querySelector("[data-autofocus]");
  if (target) target.focus();
});

// Errors come back as alert fragments with a 4xx status, aimed at the page's alert region
// (HX-Retarget): swap them in like any answer.
document.addEventListener("htmx:beforeSwap", (event) => {
  const xhr = event.detail.xhr;
  if (xhr.status >= 400 && xhr.getResponseHeader("HX-Retarget")) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// Alerts that must be acknowledged: while an alert dialog is open the scan fields are
// disabled (a scanner types into whatever has the focus) and the dialog has the focus.
function syncAlerts() {
  const dialog = document.querySelector('[role="alertdialog"]');
  document.querySelectorAll("[data-scan]").forEach((field) => {
    field.disabled = dialog !== null;
    if (field.form) {
      field.form.querySelectorAll('button[type="submit"]').forEach((button) => {
        button.disabled = dialog !== null;
      });
    }
  });
  if (dialog) {
    const first = dialog.querySelector("[data-alert-focus]") || dialog.querySelector("[data-acknowledge]");
    if (first) first.focus();
  }
  return dialog;
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-acknowledge]");
  if (!button) return;
  const dialog = button.closest('[role="alertdialog"]');
  if (dialog) dialog.remove();
  if (!syncAlerts()) {
    const field = document.querySelector("[data-autofocus]") || document.querySelector("[data-scan]");
    if (field) {
      field.focus();
      field.select();
    }
  }
});
document.addEventListener("htmx:afterSwap", syncAlerts);
document.addEventListener("htmx:oobAfterSwap", syncAlerts);
document.addEventListener("DOMContentLoaded", syncAlerts);

// A scan field that gets the focus has its text selected: the next scan replaces it.
document.addEventListener("focusin", (event) => {
  if (event.target.matches && event.target.matches("input[data-scan]")) event.target.select();
});

// A scan form marked data-reset is emptied after each scan, ready for the next one.
document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (event.detail.successful && form instanceof HTMLFormElement && form.hasAttribute("data-reset")) {
    form.reset();
  }
});
