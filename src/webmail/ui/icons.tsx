// Inline SVG icons (no icon font, no emoji: they render the same everywhere, and in dark mode
// they take the text colour).
import type { JSX } from 'preact';

const PATHS = {
  inbox: 'M3 13h5l2 3h4l2-3h5M5 5h14l2 8v6H3v-6z',
  sent: 'M3 11 21 3l-8 18-2-8z',
  drafts: 'M4 20h4L19 9l-4-4L4 16zM14 6l4 4',
  trash: 'M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13',
  junk: 'M12 3 2 20h20zM12 10v4M12 17v.5',
  archive: 'M3 4h18v4H3zM5 8v12h14V8M10 12h4',
  folder: 'M3 6h6l2 2h10v11H3z',
  star: 'M12 3l2.7 5.6 6.1.9-4.4 4.3 1 6.1L12 17l-5.4 2.9 1-6.1L3.2 9.5l6.1-.9z',
  clip: 'M20 11l-8.5 8.5a5 5 0 0 1-7-7L13 4a3.5 3.5 0 0 1 5 5l-8.5 8.5a2 2 0 0 1-3-3L14 7',
  reply: 'M10 8 4 13l6 5M4 13h10a6 6 0 0 1 6 6',
  replyAll: 'M11 8 5 13l6 5M7 8l-5 5 5 5M5 13h9a6 6 0 0 1 6 6',
  forward: 'M14 8l6 5-6 5M20 13H10a6 6 0 0 0-6 6',
  pen: 'M4 20h4L19 9l-4-4L4 16z',
  search: 'M11 4a7 7 0 1 0 0 14 7 7 0 0 0 0-14zM16 16l5 5',
  back: 'M15 5l-7 7 7 7',
  menu: 'M4 6h16M4 12h16M4 18h16',
  mail: 'M3 5h18v14H3zM3 6l9 7 9-7',
  mailOpen: 'M3 10l9-6 9 6v10H3zM3 10l9 6 9-6',
  close: 'M6 6l12 12M18 6 6 18',
  code: 'M8 7l-5 5 5 5M16 7l5 5-5 5',
  threads: 'M4 5h12v8H8l-4 3zM20 9v10l-3-2h-7',
  phone: 'M7 2h10v20H7zM11 18h2',
} as const;

export type IconName = keyof typeof PATHS;

export function Icon(props: { name: IconName; size?: number; title?: string; class?: string }): JSX.Element {
  const size = props.size ?? 18;
  return (
    <svg
      class={`icon ${props.class ?? ''}`}
      width={size}
      height={size}
      viewBox="0 0 24 24"
      fill="none"
      stroke="currentColor"
      stroke-width="1.8"
      stroke-linecap="round"
      stroke-linejoin="round"
      aria-hidden={props.title ? undefined : 'true'}
      role={props.title ? 'img' : undefined}
    >
      {props.title ? <title>{props.title}</title> : null}
      <path d={PATHS[props.name]} />
    </svg>
  );
}

export function folderIcon(specialUse: string | undefined, name: string): IconName {
  if (name === 'INBOX') return 'inbox';
  switch (specialUse) {
    case '\\Sent':
      return 'sent';
    case '\\Drafts':
      return 'drafts';
    case '\\Trash':
      return 'trash';
    case '\\Junk':
      return 'junk';
    case '\\Archive':
      return 'archive';
    default:
      return 'folder';
  }
}
