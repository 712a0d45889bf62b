// Upload help: show the expected layout (and example archive) of the format chosen in the upload form,
// and, once an import that left the format to "auto" has finished, which format it found.
function uploadHelp(form, help) {
  const select = form.elements.format;

  function showLayout() {
    for (const block of help.querySelectorAll("[data-layout]")) {
      block.hidden = block.dataset.layout !== select.value;
    }
  }

  select.addEventListener("change", showLayout);
  // A reset puts the select back after the event: show the layout of the value it ends with.
  form.addEventListener("reset", () => setTimeout(showLayout, 0));
  showLayout();

  const card = document.getElementById("upload-job");
  if (!card) return;
  card.addEventListener("job-update", (e) => {
    const line = card.querySelector('[data-field="format"]');
    const result = e.detail && e.detail.result;
    if (!line || e.detail.state !== "succeeded" || !result || !result.format) {
      if (line) line.hidden = true;
      return;
    }
    line.textContent = result.format_detected ? `Format detected from the files: ${result.format}.`
                                              : `Format: ${result.format}.`;
    line.hidden = false;
  });
}

const form = document.getElementById("upload-form");
const help = document.getElementById("format-help");
if (form && help) uploadHelp(form, help);
