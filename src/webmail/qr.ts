// QR codes for the webmail, drawn on the server as SVG so the browser bundle does not carry an
// encoder: the phone set-up link (issue 9) is the one use.
import QRCode from 'qrcode';

/** An SVG QR code of `text`: error correction M (a phone camera at an angle), a quiet zone of 4 modules as ISO 18004 asks. */
export async function qrSvg(text: string): Promise<string> {
  const svg = await QRCode.toString(text, { type: 'svg', errorCorrectionLevel: 'M', margin: 4, color: { dark: '#000000', light: '#ffffff' } });
  // No width/height: the page sizes it; a label for screen readers.
  return svg.replace('<svg ', '<svg role="img" aria-label="QR code of the set-up link" ');
}
