// Key images: which images the study's Key Object Selection Documents (KO series, PS3.3
// A.35.4) flag, marking one and unmarking one (the server builds the documents: POST
// /api/v1/studies/{study}/key-images, DELETE …/key-images/{instance}, docs/web.md).

import { json } from './api.js';
import { values } from './pixels.js';

const CONTENT_SEQUENCE = '0040A730';
const VALUE_TYPE = '0040A040';
const REFERENCED_SOP_SEQUENCE = '00081199';
const REFERENCED_SOP_INSTANCE_UID = '00081155';
const CONCEPT_NAME_CODE_SEQUENCE = '0040A043';
const CODE_VALUE = '00080100';
const CODING_SCHEME_DESIGNATOR = '00080102';
// IHE IOCM rejection notes (PS3.16 CID 7011): KOs that withdraw instances, not key images.
const REJECTION_CODES = new Set(['113001', '113037', '113038', '113039']);

/** Whether a KO (DICOM JSON) is an IOCM rejection note. */
export function isRejectionNote(meta) {
  const title = values(meta, CONCEPT_NAME_CODE_SEQUENCE)[0];
  return Boolean(title) && values(title, CODING_SCHEME_DESIGNATOR)[0] === 'DCM'
    && REJECTION_CODES.has(String(values(title, CODE_VALUE)[0]));
}

/**
 * The SOP Instance UIDs the IMAGE items of key object documents reference (DICOM JSON
 * metadata of the KO instances, PS3.18 F.2: sequences are arrays of objects).
 */
export function keyImagesOf(metas) {
  const out = new Set();
  for (const m of metas) {
    if (isRejectionNote(m)) continue;
    for (const item of values(m, CONTENT_SEQUENCE)) {
      if (values(item, VALUE_TYPE)[0] !== 'IMAGE') continue;
      for (const ref of values(item, REFERENCED_SOP_SEQUENCE)) {
        const uid = values(ref, REFERENCED_SOP_INSTANCE_UID)[0];
        if (uid) out.add(String(uid));
      }
    }
  }
  return out;
}

/**
 * Saves `sops` (instances of `study`) as key images; answers the new document's UIDs. With
 * `peer`, the study is held at that peer and the document is stored there.
 */
export function markKeyImage(study, sops, description = '', peer = '') {
  const at = peer ? `?peer=${encodeURIComponent(peer)}` : '';
  return json(`/api/v1/studies/${encodeURIComponent(study)}/key-images${at}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ instances: sops, description }),
  });
}

/**
 * Unmarks `sop` (an instance of `study`): the server withdraws the caller's key image
 * documents that reference it (an IOCM rejection note) and saves the caller's other key images
 * of those documents in a new one. With `peer`, at that peer.
 */
export function unmarkKeyImage(study, sop, peer = '') {
  const at = peer ? `?peer=${encodeURIComponent(peer)}` : '';
  return json(`/api/v1/studies/${encodeURIComponent(study)}/key-images/${encodeURIComponent(sop)}${at}`, {
    method: 'DELETE',
  });
}
