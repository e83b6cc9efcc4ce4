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
