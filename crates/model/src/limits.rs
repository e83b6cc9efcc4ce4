//! Size limits of Segment's HTTP Tracking API, which real SDKs already respect client-side
//! (see shared/reference/segment.md §2.3). Junction enforces the same numbers so that whatever
//! Segment would accept, Junction accepts, and whatever it refuses is refused with the limit named.

/// One message, as JSON text: 32 KB.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// One `/v1/batch` (or `/v1/import`, or webhook array) request body, after decompression: 500 KB.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// Messages in one batch request.
pub const MAX_BATCH_MESSAGES: usize = 2_500;

/// Segment drops messages whose `messageId` is longer than this.
pub const MAX_MESSAGE_ID_CHARS: usize = 100;

/// Ids (`userId`, `anonymousId`, `groupId`, `previousId`) become Intercom's `external_id` and
/// `company_id` and parts of Intercom URLs. Intercom documents no maximum for them; its own ids
/// are at most 128 characters and its identifier columns 255, so Junction refuses longer ones
/// at ingest rather than have every delivery of them fail.
pub const MAX_ID_CHARS: usize = 255;

/// A numeric id is exact in JSON (whose readers keep numbers as IEEE doubles) only up to 2^53.
pub const MAX_EXACT_JSON_INTEGER: u64 = 1 << 53;
