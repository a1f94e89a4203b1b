// The only script on the page: move focus to the answer (or to the errors) and wire the print button.
document.addEventListener("DOMContentLoaded", function () {
  var heading = document.getElementById("error-summary-heading") || document.getElementById("result-heading");
  if (heading) {
    heading.focus();
  }
  var print = document.getElementById("print-button");
  if (print) {
    print.hidden = false;
    print.addEventListener("click", function () {
      window.print();
    });
  }
});
