import { headersFromRaw, bodyTextFromRaw } from '../src/store/fulltext.ts';
const b64 = Buffer.from('Bonjour, voilà le résumé du café.\r\n', 'utf8').toString('base64');
const raw = Buffer.from([
 'From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <jorg@example.com>',
 'To: alice@example.org,',
 '  bob@example.net',
 'Subject: =?UTF-8?B?' + Buffer.from('Résumé de réunion', 'utf8').toString('base64') + '?=',
 'Date: Mon, 2 Feb 2026 23:30:00 -0800',
 'MIME-Version: 1.0',
 'Content-Type: multipart/mixed; boundary="XYZ"',
 '',
 'preamble',
 '--XYZ',
 'Content-Type: text/plain; charset=utf-8',
 'Content-Transfer-Encoding: base64',
 '',
 b64,
 '--XYZ',
 'Content-Type: text/html; charset=iso-8859-1',
 'Content-Transfer-Encoding: quoted-printable',
 '',
 '<html><head><style>p{color:red}</style></head><body><p>Caf=E9 &amp; cr&egrave;me</p><script>var secret=1</script></body></html>',
 '--XYZ',
 'Content-Type: application/octet-stream; name="a.bin"',
 'Content-Disposition: attachment; filename="a.bin"',
 'Content-Transfer-Encoding: base64',
 '',
 Buffer.from('ZZSECRETATTACHMENT').toString('base64'),
 '--XYZ--',
 'epilogue', ''].join('\r\n'));
console.log(headersFromRaw(raw));
console.log(JSON.stringify(await bodyTextFromRaw(raw)));
