// Key images: which images the study's Key Object Selection Documents (KO series, PS3.3
// A.35.4) flag, and marking one (the server builds the document: POST
// /api/v1/studies/{study}/key-images, docs/web.md).

import { json } from './api.js';
import { values } from './pixels.js';

const CONTENT_SEQUENCE = '0040A730';
const VALUE_TYPE = '0040A040';
const REFERENCED_SOP_SEQUENCE = '00081199';
const REFERENCED_SOP_INSTANCE_UID = '00081155';

/**
 * The SOP Instance UIDs the IMAGE items of key object documents reference (DICOM JSON
 * metadata of the KO instances, PS3.18 F.2: sequences are arrays of objects).
 */
export function keyImagesOf(metas) {
  const out = new Set();
  for (const m of metas) {
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
