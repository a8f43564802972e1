/**
 * Getting photos into the page: a drop zone (files or whole folders), a file picker, a folder picker
 * (webkitdirectory) and the webcam (getUserMedia into a canvas, one JPEG per snap).
 */
import { h, id } from './dom.js';

const IMAGE_EXT = /\.(jpe?g|png|gif|webp|tiff?|avif)$/i;

/** Files that look like images (by type or name; the server checks the bytes anyway). */
export function imagesOnly(files: Iterable<File>): { images: File[]; skipped: File[] } {
  const images: File[] = [];
  const skipped: File[] = [];
  for (const f of files) (f.type.startsWith('image/') || IMAGE_EXT.test(f.name) ? images : skipped).push(f);
  return { images, skipped };
}

/** Every file in a drop, descending into dropped folders. */
async function droppedFiles(dt: DataTransfer): Promise<File[]> {
  const entries = [...dt.items].map((i) => i.webkitGetAsEntry?.()).filter((e): e is FileSystemEntry => !!e);
  if (!entries.length || !entries.some((e) => e.isDirectory)) return [...dt.files];
  const out: File[] = [];
  const walk = async (e: FileSystemEntry): Promise<void> => {
    if (e.isFile) {
      out.push(await new Promise<File>((res, rej) => (e as FileSystemFileEntry).file(res, rej)));
    } else if (e.isDirectory) {
      const reader = (e as FileSystemDirectoryEntry).createReader();
      for (;;) {
        const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const c of batch) await walk(c);
      }
    }
  };
  for (const e of entries) await walk(e);
  return out;
}

export interface PickerOptions {
  /** What the zone says. */
  label: string;
  multiple?: boolean;
  folders?: boolean;
  webcam?: boolean;
  /** Called with the picked files (already filtered to images when `multiple`). */
  onFiles(files: File[]): void;
  /** Accessible name for the file input (tests find it by label). */
  inputLabel?: string;
}

/** A drop zone with its buttons. Returns the element; the file input has the class `file-input`. */
export function photoPicker(o: PickerOptions): HTMLElement {
  const inputId = id('file');
  const input = h('input', { type: 'file', id: inputId, class: 'file-input visually-hidden', accept: 'image/*', multiple: !!o.multiple, 'aria-label': o.inputLabel ?? o.label });
  input.addEventListener('change', () => {
    if (input.files?.length) o.onFiles([...input.files]);
    input.value = '';
  });
  const chooseFiles = h('button', { type: 'button', class: 'small', onclick: () => input.click() }, o.multiple ? 'Choose photos…' : 'Choose a photo…');
  let folderBtn: HTMLElement | null = null;
  let folderInput: HTMLInputElement | null = null;
  if (o.folders) {
    folderInput = h('input', { type: 'file', class: 'folder-input visually-hidden', multiple: true, 'aria-label': `${o.inputLabel ?? o.label}: a folder`, tabindex: '-1' });
    folderInput.setAttribute('webkitdirectory', '');
    folderInput.addEventListener('change', () => {
      if (folderInput!.files?.length) o.onFiles([...folderInput!.files]);
      folderInput!.value = '';
    });
    folderBtn = h('button', { type: 'button', class: 'small', onclick: () => folderInput!.click() }, 'Choose a folder…');
  }
  const webcamBtn = o.webcam
    ? h('button', {
        type: 'button',
        class: 'small',
        onclick: () => openWebcam({ multi: !!o.multiple, title: o.label, onPhoto: (f) => o.onFiles([f]) }),
      }, 'Webcam…')
    : null;
  const zone = h(
    'div',
    { class: 'dropzone' },
    h('p', { class: 'dropzone-text' }, o.label),
    h('div', { class: 'button-row' }, chooseFiles, folderBtn, webcamBtn),
    input,
    folderInput,
  );
  let depth = 0;
  zone.addEventListener('dragenter', (e) => {
    e.preventDefault();
    depth++;
    zone.classList.add('is-over');
  });
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = 'copy';
  });
  zone.addEventListener('dragleave', () => {
    if (--depth <= 0) {
      depth = 0;
      zone.classList.remove('is-over');
    }
  });
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove('is-over');
    if (!e.dataTransfer) return;
    void droppedFiles(e.dataTransfer).then((files) => {
      if (files.length) o.onFiles(o.multiple ? files : files.slice(0, 1));
    });
  });
  return zone;
}

/**
 * The webcam in a modal dialog: a live <video>, "Take photo" draws the frame into a canvas and hands a JPEG file to
 * `onPhoto` (several when `multi`, else the dialog closes after one). The camera stops when the dialog closes.
 */
export function openWebcam(o: { title: string; multi: boolean; onPhoto(f: File): void }): void {
  const video = h('video', { autoplay: true, playsInline: true, muted: true, class: 'webcam-video', 'aria-label': 'camera preview' });
  const status = h('p', { role: 'status', 'aria-live': 'polite', class: 'hint' }, 'Starting the camera…');
  const snap = h('button', { type: 'button', class: 'primary', disabled: true }, 'Take photo');
  const done = h('button', { type: 'button' }, o.multi ? 'Done' : 'Cancel');
  const dialog = h('dialog', { class: 'webcam', 'aria-label': `Webcam: ${o.title}` }, h('h3', {}, 'Webcam'), video, status, h('div', { class: 'button-row' }, snap, done));
  document.body.append(dialog);
  let stream: MediaStream | undefined;
  let taken = 0;
  const close = () => {
    stream?.getTracks().forEach((t) => t.stop());
    dialog.close();
    dialog.remove();
  };
  dialog.addEventListener('cancel', close);
  done.addEventListener('click', close);
  snap.addEventListener('click', () => {
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext('2d')!.drawImage(video, 0, 0);
    canvas.toBlob((b) => {
      if (!b) return;
      taken++;
      o.onPhoto(new File([b], `webcam-${new Date().toISOString().replace(/[:.]/g, '-')}.jpg`, { type: 'image/jpeg' }));
      if (!o.multi) close();
      else status.textContent = `${taken} photo${taken === 1 ? '' : 's'} taken`;
    }, 'image/jpeg', 0.92);
  });
  dialog.showModal();
  if (!navigator.mediaDevices?.getUserMedia) {
    status.textContent = 'This browser gives no camera here (a camera needs a secure page: localhost or https).';
    return;
  }
  navigator.mediaDevices
    .getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false })
    .then((s) => {
      stream = s;
      if (!dialog.open) return close();
      video.srcObject = s;
      status.textContent = o.multi ? 'Take as many photos as you like.' : 'Frame the subject, then take the photo.';
      snap.disabled = false;
      snap.focus();
    })
    .catch((err: Error) => {
      status.textContent = `No camera: ${err.message}`;
    });
}
