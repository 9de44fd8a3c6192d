import { BinaryReader } from '@bufbuild/protobuf/wire';
import { ValidateSessionStreamRequest } from '../../generated/sessions/v1/session_service';
import { BATCH_MAX_HEADER, MAX_BATCH_ITEMS } from '../shared/stream-protocol';

/*
 * Strict decoding (request-decoding.ts) checks the framing of a message's own
 * fields, but the generated decoder stops at a field number 0 or a stray
 * end-group inside a nested message and goes on reading the rest as fields of
 * the outer one: a damaged item could turn into a different validation. The
 * framing of each item is checked the same way first.
 *
 * The same walk counts the items: the generated decoder makes an object of
 * every item before the handler could count them, and an empty item is two
 * bytes, so a message within --max-message-bytes would otherwise cost
 * hundreds of thousands of objects before being refused. The walk allocates
 * nothing and stops at the first item past the limit.
 */
const ITEMS_FIELD = 4;
const LENGTH_DELIMITED = 2;

export function tooManyItems(count: string): string {
  return `items: ${count} in one message; the limit is ${MAX_BATCH_ITEMS} (response header ${BATCH_MAX_HEADER})`;
}

/**
 * A message with more items than MAX_BATCH_ITEMS, refused before it is
 * decoded. The deserializer hands it to the handler in the request's place
 * (request-decoding.ts), so that the messages before it are still answered
 * before the stream ends with INVALID_ARGUMENT.
 */
export class ItemLimitExceeded extends Error {
  constructor() {
    super(tooManyItems(`more than ${MAX_BATCH_ITEMS}`));
  }
}

function checkItemFraming(reader: BinaryReader): void {
  let index = 0;
  while (reader.pos < reader.len) {
    // Indexed, not destructured: destructuring goes through the array
    // iterator, a few objects per field, and this runs for every item.
    const tag = reader.tag();
    const field = tag[0];
    const wireType = tag[1];
    if (field !== ITEMS_FIELD || wireType !== LENGTH_DELIMITED) {
      reader.skip(wireType, field);
      continue;
    }
    if (index === MAX_BATCH_ITEMS) throw new ItemLimitExceeded();
    const end = reader.uint32() + reader.pos;
    try {
      while (reader.pos < end) {
        const t = reader.tag();
        reader.skip(t[1], t[0]);
      }
      if (reader.pos !== end) throw new Error('a field runs past the end of the item');
    } catch (err) {
      throw new Error(`item ${index} of items: ${err instanceof Error ? err.message : String(err)}`);
    }
    index++;
  }
}

/**
 * ValidateSessionStreamRequest for request-decoding.ts: its framing walk is
 * the item check above, in place of the generic one, so that a message over
 * the item limit never reaches the generated decoder.
 */
export const StrictValidateSessionStreamRequest = {
  /**
   * Walks the whole message from `reader`'s position.
   * @throws ItemLimitExceeded at the first item past MAX_BATCH_ITEMS.
   * @throws Error naming the item whose framing is broken.
   */
  checkFraming(reader: BinaryReader): void {
    checkItemFraming(reader);
  },
  decode(input: BinaryReader | Uint8Array): ValidateSessionStreamRequest {
    return ValidateSessionStreamRequest.decode(input);
  },
};

