// The review page's figures: nuclei reviewed today, left in the queue, and how often the reviewer
// agreed with the model. Counted here as decisions are saved, so that they move at once, and
// replaced by the server's figures (GET review/progress/) shortly after.
export class ReviewProgress {
  constructor({ secondOpinions }) {
    // Reviewing labelled nuclei again takes none off the queue.
    this.secondOpinions = secondOpinions;
    this.today = null;
    this.left = null;
    this.compared = 0;
    this.agreed = 0;
  }

  // The server's answer.
  update(data) {
    this.today = data.reviewed_today;
    this.left = data.left;
    this.compared = data.compared_with_model;
    this.agreed = data.agreed_with_model;
  }

  // A decision saved (+1) or undone (-1); entry.predicted is the model's class when it was made.
  count(entry, sign) {
    if (this.today != null) this.today += sign;
    if (this.left != null && !this.secondOpinions) this.left -= sign;
    if (entry.predicted != null) {
      this.compared += sign;
      if (entry.predicted === entry.class_index) this.agreed += sign;
    }
  }

  // An undo, whose decision's details the page no longer has.
  uncountToday() {
    if (this.today != null) this.today -= 1;
  }
}
