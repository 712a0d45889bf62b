// How the review pages write numbers and nuclei.

// 0.4251 -> "43%"
export const pct = (p) => `${Math.round(p * 100)}%`;

// A nucleus as people know it, everywhere on the page: its number in its image (the mask's id).
export const nucleusName = (number, image) =>
  (number == null ? "a nucleus" : `nucleus ${number}${image ? ` in ${image}` : ""}`);
