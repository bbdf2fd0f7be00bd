// The folder list: INBOX, the special folders, then the rest, with unread counts. Each folder
// is a drop target for messages dragged from the list.
import { useState } from 'preact/hooks';
import type { JSX } from 'preact';
import { Icon, folderIcon } from './icons.tsx';
import { createFolder, currentFolder, folders, moveTo, openFolder, phoneOpen, searchQuery } from './state.ts';

export const DRAG_TYPE = 'application/x-hearth-uids';

function FolderItem(props: { name: string; specialUse?: string; unseen: number; total: number }): JSX.Element {
  const [over, setOver] = useState(false);
  const depth = props.name.split('/').length - 1;
  const label = props.name === 'INBOX' ? 'Inbox' : (props.name.split('/').at(-1) ?? props.name);
  const active = currentFolder.value === props.name && !searchQuery.value;
  return (
    <li>
      <a
        href={`#/${encodeURIComponent(props.name)}`}
        class={`folder${active ? ' active' : ''}${over ? ' drop' : ''}`}
        style={{ paddingLeft: `${0.75 + depth * 0.9}rem` }}
        data-folder={props.name}
        aria-current={active ? 'page' : undefined}
        title={props.name}
        onClick={(e) => {
          e.preventDefault();
          openFolder(props.name);
        }}
        onDragOver={(e) => {
          if (!e.dataTransfer?.types.includes(DRAG_TYPE) || props.name === currentFolder.value) return;
          e.preventDefault();
          e.dataTransfer.dropEffect = 'move';
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={(e) => {
          setOver(false);
          const raw = e.dataTransfer?.getData(DRAG_TYPE);
          if (!raw) return;
          e.preventDefault();
          const uids = (JSON.parse(raw) as unknown[]).filter((u): u is number => typeof u === 'number');
          void moveTo(props.name, uids);
        }}
      >
        <Icon name={folderIcon(props.specialUse, props.name)} />
        <span class="folder-name">{label}</span>
        {props.unseen > 0 ? (
          <span class="count" aria-label={`${props.unseen} unread`}>
            {props.unseen}
          </span>
        ) : null}
      </a>
    </li>
  );
}

export function Sidebar(props: { onCompose: () => void }): JSX.Element {
  const [adding, setAdding] = useState(false);
  const [name, setName] = useState('');
  return (
    <nav class="sidebar" aria-label="Folders">
      <button class="primary compose-btn" onClick={props.onCompose} title="Compose (c)">
        <Icon name="pen" /> Compose
      </button>
      <ul class="folders">
        {folders.value.map((f) => (
          <FolderItem key={f.name} name={f.name} specialUse={f.specialUse} unseen={f.unseen} total={f.total} />
        ))}
      </ul>
      {adding ? (
        <form
          class="new-folder"
          onSubmit={(e) => {
            e.preventDefault();
            const n = name.trim();
            if (!n) return;
            void createFolder(n).then((ok) => {
              if (ok) {
                setAdding(false);
                setName('');
              }
            });
          }}
        >
          <input autoFocus placeholder="Folder name" aria-label="New folder name" value={name} onInput={(e) => setName(e.currentTarget.value)} onKeyDown={(e) => e.key === 'Escape' && setAdding(false)} />
        </form>
      ) : (
        <button class="link new-folder-btn" onClick={() => setAdding(true)}>
          + New folder
        </button>
      )}
      <button class="link phone-btn" onClick={() => (phoneOpen.value = true)} title="Add this account to an iPhone or iPad">
        <Icon name="phone" size={15} /> Set up your phone
      </button>
    </nav>
  );
}
