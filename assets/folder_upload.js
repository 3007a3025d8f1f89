// The folder uploader's browser side (a Streamlit custom component, v2, plain JavaScript).
//
// The user chooses a folder (or drops one). The files are sent in batches of about
// 8 MB: each batch is one POST whose body is a line of JSON naming the files and
// their sizes, then the files' bytes in the same order. The body is a Blob built
// from the File objects, so the browser streams the bytes from disk and this script
// never holds them. Two batches are in flight at a time. Nothing reruns the page
// until the upload has ended; then one trigger value ("ended") tells Python how.
//
// Streamlit calls the default export again whenever the data from Python changes
// (a new upload token, say); the elements are built once per mount and kept.

const STYLE = `
.tlfu { font-family: var(--st-font, sans-serif); color: var(--st-text-color, inherit); }
.tlfu-zone { border: 1px dashed var(--st-border-color, #ccc); border-radius: 0.5rem; padding: 1rem;
  background: var(--st-secondary-background-color, #f6f6f9); display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
.tlfu-zone.tlfu-over { border-color: var(--st-primary-color, #ff4b4b); }
.tlfu-pick { display: inline-block; cursor: pointer; padding: 0.4rem 0.9rem; border-radius: 0.5rem;
  border: 1px solid var(--st-border-color, #ccc); background: var(--st-background-color, #fff); font-size: 0.95rem; }
.tlfu-pick input { display: none; }
.tlfu-busy .tlfu-pick { opacity: 0.5; pointer-events: none; }
.tlfu-hint { font-size: 0.85rem; opacity: 0.75; }
.tlfu-progress { margin-top: 0.75rem; display: none; }
.tlfu-busy .tlfu-progress, .tlfu-done .tlfu-progress { display: block; }
.tlfu-track { height: 0.6rem; border-radius: 0.3rem; background: var(--st-border-color, #ddd); overflow: hidden; }
.tlfu-fill { height: 100%; width: 0; background: var(--st-primary-color, #ff4b4b); transition: width 0.2s; }
.tlfu-row { display: flex; justify-content: space-between; align-items: center; margin-top: 0.4rem; font-size: 0.9rem; gap: 1rem; }
.tlfu-cancel { cursor: pointer; padding: 0.25rem 0.8rem; border-radius: 0.5rem; border: 1px solid var(--st-border-color, #ccc);
  background: var(--st-background-color, #fff); color: inherit; display: none; }
.tlfu-busy .tlfu-cancel { display: inline-block; }
.tlfu-message { margin-top: 0.5rem; font-size: 0.9rem; white-space: pre-line; }
.tlfu-message.tlfu-error { color: var(--st-red-color, #d33); }
`;

const HTML = `
<div class="tlfu">
  <div class="tlfu-zone" data-testid="tl-folder-drop">
    <label class="tlfu-pick">Choose folder…<input type="file" webkitdirectory multiple data-testid="tl-folder-input"></label>
    <span class="tlfu-hint">or drop the folder here. It is sent in large batches: thousands of photos take seconds, not minutes.</span>
  </div>
  <div class="tlfu-progress">
    <div class="tlfu-track"><div class="tlfu-fill" role="progressbar" aria-valuemin="0" aria-valuemax="100"></div></div>
    <div class="tlfu-row"><span class="tlfu-status" data-testid="tl-folder-status"></span>
      <button type="button" class="tlfu-cancel" data-testid="tl-folder-cancel">Cancel</button></div>
  </div>
  <div class="tlfu-message" data-testid="tl-folder-message"></div>
</div>`;

const MB = 1e6;  // megabytes of 10^6 bytes, as everywhere in the app

function formatBytes(count) {
  if (count >= 1e9) return (count / 1e9).toFixed(1) + " GB";
  if (count >= MB) return (count / MB).toFixed(1) + " MB";
  if (count >= 1e3) return (count / 1e3).toFixed(1) + " kB";
  return count.toLocaleString("en") + " bytes";
}

function count(n) { return n.toLocaleString("en"); }

// Every file under a dropped folder, with its path relative to the drop (like webkitRelativePath).
async function filesFromDrop(items) {
  const found = [];
  async function walk(entry) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      found.push({ file, path: entry.fullPath.replace(/^\/+/, "") });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {  // readEntries answers in pieces (about 100 at a time) until it returns none
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  }
  const entries = Array.from(items).map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  for (const entry of entries) await walk(entry);
  return found;
}

// The first limit the chosen files break, as a sentence that says what to do; "" when none.
function limitProblem(files, totalBytes, largest, limits) {
  const remedy = "Use 'Folder on this computer' for a folder this large, or raise the limit";
  if (files.length > limits.max_files)
    return `The folder holds ${count(files.length)} files while at most ${count(limits.max_files)} are accepted. ${remedy} (TL_CORE_MAX_UPLOAD_FILES).`;
  if (totalBytes > limits.max_total_bytes)
    return `The folder totals ${formatBytes(totalBytes)} while at most ${formatBytes(limits.max_total_bytes)} are accepted. ${remedy} (TL_CORE_MAX_UPLOAD_MB).`;
  if (largest && largest.file.size > limits.max_file_bytes)
    return `'${largest.path}' is ${formatBytes(largest.file.size)} while a single file may have at most ${formatBytes(limits.max_file_bytes)}. ` +
      "Remove it from the folder, or raise the limit (TL_CORE_MAX_FILE_MB).";
  return "";
}

function batchesOf(files, batchBytes, batchFiles) {
  const batches = [];
  let current = [], bytes = 0;
  for (const item of files) {
    if (current.length && (bytes + item.file.size > batchBytes || current.length >= batchFiles)) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(item);
    bytes += item.file.size;
  }
  if (current.length) batches.push(current);
  return batches;
}

function batchBody(batch) {
  const manifest = JSON.stringify({ files: batch.map((item) => ({ path: item.path, size: item.file.size })) });
  return new Blob([manifest + "\n", ...batch.map((item) => item.file)], { type: "application/octet-stream" });
}

class FolderUpload {
  constructor(root, setTriggerValue) {
    this.root = root;
    this.setTriggerValue = setTriggerValue;
    this.box = root.querySelector(".tlfu");
    this.fill = root.querySelector(".tlfu-fill");
    this.status = root.querySelector(".tlfu-status");
    this.message = root.querySelector(".tlfu-message");
    this.requests = new Set();
    this.running = null;
    this.attempt = 0;
    const input = root.querySelector("input[type=file]");
    input.addEventListener("change", () => {
      const files = Array.from(input.files).map((file) => ({ file, path: file.webkitRelativePath || file.name }));
      input.value = "";  // choosing the same folder again starts a new upload
      this.start(files);
    });
    const zone = root.querySelector(".tlfu-zone");
    zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("tlfu-over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("tlfu-over"));
    zone.addEventListener("drop", async (event) => {
      event.preventDefault();
      zone.classList.remove("tlfu-over");
      if (this.running) return;
      this.say("Reading the dropped folder…");
      this.start(await filesFromDrop(event.dataTransfer.items));
    });
    root.querySelector(".tlfu-cancel").addEventListener("click", () => this.cancel());
  }

  say(text, isError = false) {
    this.message.textContent = text;
    this.message.classList.toggle("tlfu-error", isError);
  }

  show(sentFiles, sentBytes, totalFiles, totalBytes, started) {
    const share = totalBytes ? sentBytes / totalBytes : sentFiles / Math.max(totalFiles, 1);
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0.5 ? ` · ${(sentBytes / MB / seconds).toFixed(1)} MB/s` : "";
    this.fill.style.width = (100 * share).toFixed(1) + "%";
    this.fill.setAttribute("aria-valuenow", (100 * share).toFixed(0));
    this.status.textContent =
      `${count(sentFiles)} of ${count(totalFiles)} files · ${formatBytes(sentBytes)} of ${formatBytes(totalBytes)} · ${seconds.toFixed(0)} s${rate}`;
  }

  end(status, details) {
    this.box.classList.remove("tlfu-busy");
    this.box.classList.toggle("tlfu-done", status === "finished");
    this.running = null;
    this.setTriggerValue("ended", { status, attempt: this.attempt, ...details });
  }

  async start(files) {
    if (this.running || !this.data) return;
    if (!files.length) {
      this.say("The chosen folder holds no files. Choose the folder that holds one sub-folder per class.", true);
      return;
    }
    const totalBytes = files.reduce((sum, item) => sum + item.file.size, 0);
    const largest = files.reduce((big, item) => (!big || item.file.size > big.file.size ? item : big), null);
    const problem = limitProblem(files, totalBytes, largest, this.data.limits);
    if (problem) {
      this.say(problem, true);
      this.attempt += 1;
      this.end("failed", { files: 0, bytes: 0, seconds: 0, message: problem });
      return;
    }
    const url = this.data.url;
    const run = { cancelled: false, started: performance.now() };
    this.running = run;
    this.attempt += 1;
    this.box.classList.add("tlfu-busy");
    this.box.classList.remove("tlfu-done");
    this.say("");
    let sentFiles = 0, sentBytes = 0;
    const partial = new Map();  // bytes of each batch in flight that have left the browser
    const update = () => {
      let inFlight = 0;
      for (const bytes of partial.values()) inFlight += bytes;
      this.show(sentFiles, sentBytes + inFlight, files.length, totalBytes, run.started);
    };
    update();
    try {
      await this.post(url + "/begin", JSON.stringify({
        files: files.length, bytes: totalBytes, largest_name: largest.path, largest_bytes: largest.file.size,
      }), run);
      const batches = batchesOf(files, this.data.batch_bytes, this.data.batch_files);
      let next = 0;
      const worker = async () => {
        while (next < batches.length && !run.cancelled) {
          const batch = batches[next++];
          const batchBytes = batch.reduce((sum, item) => sum + item.file.size, 0);
          // What has left the browser counts the manifest line too: never show more than the files' bytes.
          await this.post(url + "/batch", batchBody(batch), run, (loaded) => { partial.set(batch, Math.min(loaded, batchBytes)); update(); });
          partial.delete(batch);
          sentFiles += batch.length;
          sentBytes += batchBytes;
          update();
        }
      };
      await Promise.all([worker(), worker()]);
      if (run.cancelled) return;
      const seconds = (performance.now() - run.started) / 1000;
      this.sent = `Sent ${count(files.length)} files (${formatBytes(totalBytes)}) in ${seconds.toFixed(1)} s.`;
      this.say(`${this.sent} Reading them…`);
      this.end("finished", { files: files.length, bytes: totalBytes, seconds, message: "" });
    } catch (error) {
      if (run.cancelled) return;
      this.abortRequests();
      const message = String(error.message || error);
      this.say(message, true);
      this.end("failed", { files: sentFiles, bytes: sentBytes, seconds: (performance.now() - run.started) / 1000, message });
    }
  }

  // One POST; resolves with the answer's JSON, rejects with the server's message.
  post(url, body, run, onProgress) {
    return new Promise((resolve, reject) => {
      if (run.cancelled) { reject(new Error("cancelled")); return; }
      const request = new XMLHttpRequest();
      this.requests.add(request);
      request.open("POST", url);
      // A header no cross-site page can send without asking first (the server never says yes).
      request.setRequestHeader("X-TL-Upload", "1");
      if (onProgress) request.upload.onprogress = (event) => onProgress(event.loaded);
      request.onload = () => {
        this.requests.delete(request);
        let answer = {};
        try { answer = JSON.parse(request.responseText); } catch (ignored) { /* not JSON: say the status below */ }
        if (request.status === 200) resolve(answer);
        else reject(new Error(answer.error || `The app answered ${request.status} ${request.statusText} while receiving the folder. Reload the page and try again.`));
      };
      request.onerror = () => {
        this.requests.delete(request);
        reject(new Error("The connection to the app was lost while sending the folder. Check that the app is still running, reload the page and try again."));
      };
      request.onabort = () => { this.requests.delete(request); reject(new Error("cancelled")); };
      request.send(body);
    });
  }

  // Python has taken the finished upload (it opened a new one): the "reading" note is over.
  settled() {
    if (this.sent && this.message.textContent.startsWith(this.sent)) this.say(this.sent);
    this.sent = "";
  }

  abortRequests() {
    for (const request of Array.from(this.requests)) request.abort();
  }

  cancel() {
    const run = this.running;
    if (!run) return;
    run.cancelled = true;
    this.abortRequests();
    this.sendCancel();
    const seconds = (performance.now() - run.started) / 1000;
    this.say("Upload cancelled; nothing from it was kept. Choose a folder to start again.");
    this.end("cancelled", { files: 0, bytes: 0, seconds, message: "Upload cancelled." });
  }

  // The page went away mid-upload (another page opened, the tab closed): stop and discard.
  unmount() {
    const run = this.running;
    if (!run) return;
    run.cancelled = true;
    this.abortRequests();
    this.sendCancel();
  }

  // Tells the server to discard what arrived; keepalive lets it go out even as the page goes away.
  sendCancel() {
    fetch(this.data.url + "/cancel", { method: "POST", keepalive: true, headers: { "X-TL-Upload": "1" } }).catch(() => {});
  }
}

export default function (component) {
  const { data, setTriggerValue, parentElement } = component;
  let uploader = parentElement.__tlFolderUpload;
  if (!uploader) {
    const style = document.createElement("style");
    style.textContent = STYLE;
    parentElement.appendChild(style);
    const holder = document.createElement("div");
    holder.innerHTML = HTML;
    parentElement.appendChild(holder);
    uploader = new FolderUpload(parentElement, setTriggerValue);
    parentElement.__tlFolderUpload = uploader;
  }
  uploader.setTriggerValue = setTriggerValue;
  if (!uploader.running) {  // an upload in progress keeps the token it began with
    if (uploader.data && uploader.data.url !== data.url) uploader.settled();
    uploader.data = data;
    // A box drawn anew has lost what it said: the page remembers the last upload's outcome.
    if (data.note && !uploader.message.textContent) uploader.say(data.note);
  }
  return () => uploader.unmount();
}
