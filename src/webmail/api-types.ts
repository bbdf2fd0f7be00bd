// The webmail's JSON API, shared by the server (src/webmail/) and the browser UI
// (src/webmail/ui/). Every path is under /api; every state-changing request (POST) must carry
// the session's CSRF token in the `X-CSRF-Token` header; errors are `{ error: string }` with
// a 4xx/5xx status and a sentence a person can act on.

export type Address = { name: string; address: string };

/** POST /api/login { address, password } -> Session (sets the HttpOnly session cookie). */
export type LoginRequest = { address: string; password: string };
/** GET /api/session -> Session, or 401. POST /api/logout -> { ok: true }. */
export type Session = { user: string; csrf: string };

/** GET /api/folders -> Folder[] (INBOX first, then special folders, then the rest by name). */
export type Folder = {
  name: string; // 'INBOX', 'Sent', 'Lists/hearth' ('/' is the hierarchy separator)
  specialUse?: '\\Sent' | '\\Drafts' | '\\Trash' | '\\Junk' | '\\Archive';
  total: number;
  unseen: number;
};

/** One row of a message list. */
export type MessageSummary = {
  uid: number;
  from: Address[];
  to: Address[];
  subject: string;
  date: number; // ms: the Date: header, or the internal date when missing
  flags: string[]; // IMAP flags: \Seen \Flagged \Answered \Draft, keywords
  size: number;
  hasAttachments: boolean;
  /** Present when the list is grouped by conversation: the thread's id and size. */
  thread?: { id: string; count: number };
  /** Conversation members only (`?thread=`): the start of the sender's own text, for a collapsed message. */
  snippet?: string;
};

/**
 * GET /api/folders/:folder/messages?offset=0&limit=50&threads=0 -> MessageList, newest first.
 * `:folder` is URL-encoded (encodeURIComponent('Lists/hearth')).
 */
export type MessageList = {
  folder: string;
  total: number;
  offset: number;
  messages: MessageSummary[];
  /** Search only (added by the server): the search ran out of time; these are the matches found so far. */
  partial?: boolean;
  /**
   * Search only: there may be more matches than `total` (a search stops one past the page asked
   * for); asking for the page at `total` finds more, and `total` grows.
   */
  more?: boolean;
};

export type Attachment = {
  part: string; // MIME part number, e.g. '2' or '1.2', for the download URL
  filename: string;
  contentType: string;
  size: number;
  inline: boolean;
  contentId?: string;
};

/** GET /api/folders/:folder/messages/:uid -> MessageView (does not mark it read by itself). */
export type MessageView = MessageSummary & {
  cc: Address[];
  replyTo: Address[];
  messageId: string;
  inReplyTo: string;
  references: string[];
  text: string; // the plain text body (from text/plain, or converted from HTML)
  hasHtml: boolean; // if so, show GET .../:uid/html in an <iframe sandbox>
  hasRemoteContent: boolean; // the HTML asks for remote images/styles (blocked unless allowed)
  /** Added by the server: the sender is on the "always load images" list (the html URL loads them without remote=1). */
  remoteAllowed?: boolean;
  attachments: Attachment[];
};

// Other endpoints (all relative to /api):
//   GET  folders/:folder/messages/:uid/html?remote=0|1  sanitised HTML document, CSP-sandboxed, for the iframe
//   GET  folders/:folder/messages?thread=<thread.id>   (added) the messages of one conversation, newest first, each with a snippet
//   GET  folders/:folder/messages/:uid/parts/:part     an attachment or cid: image (Content-Disposition with its name;
//                                                       add ?inline=1 to open images, text and PDF in the browser)
//   GET  folders/:folder/messages/:uid/source          the raw message as text/plain
//   POST folders/:folder/flags      { uids: number[], add?: string[], remove?: string[] } -> { ok: true }
//   POST folders/:folder/move       { uids: number[], to: string } -> { ok: true }
//   POST folders/:folder/delete     { uids: number[] } -> { ok: true } (to Trash; expunged when already in Trash)
//   POST folders                    { name } create; POST folders/:folder/rename { to }; POST folders/:folder/remove
//   GET  search?folder=INBOX&q=...  -> MessageList (q: words, from:x, to:x, subject:x, has:attachment, before:/after:YYYY-MM-DD)
//   POST send                       ComposeRequest & { replaceUid?: number } -> { ok: true, queueId?: string } (replaceUid: the draft to remove)
//   POST drafts                     ComposeRequest & { replaceUid?: number } -> { uid: number } (saved to Drafts)
//   POST senders/remote-content     { address, allow: boolean }  "always load images from this sender"
//   GET  events                     Server-Sent Events, see ServerEvent

export type ComposeRequest = {
  to: string; // comma-separated addresses as typed
  cc?: string;
  bcc?: string;
  subject: string;
  text: string;
  html?: string;
  inReplyTo?: string;
  references?: string[];
  /** Files picked or dropped, base64 encoded (the UI limits the total to the server's message size). */
  attachments?: Array<{ filename: string; contentType: string; base64: string }>;
  /** Attach another message as message/rfc822 (forward as attachment). */
  forwardOf?: { folder: string; uid: number };
};

/**
 * GET /api/client/phone-setup -> PhoneSetup: a link that downloads the user's Apple .mobileconfig
 * without the session cookie (a signed token, valid for 15 minutes, no password in it), and an
 * SVG QR code of it for a phone's camera. GET /api/client/mobileconfig downloads it with the cookie.
 */
export type PhoneSetup = { url: string; expiresAt: number; svg: string };

/** GET /api/events: one `event: change` per store change, `data` is this JSON. */
export type ServerEvent =
  | { kind: 'added'; folder: string; uids: number[] }
  | { kind: 'flags'; folder: string; changes: Array<{ uid: number; flags: string[] }> }
  | { kind: 'expunged'; folder: string; uids: number[] }
  | { kind: 'folders' };
