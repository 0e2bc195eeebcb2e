// InterpLab's JupyterLab 4 extension, written by hand (no Node build): a module federation
// container as JupyterLab's bootstrap expects one in window._JUPYTERLAB[<package name>], with
// init(shareScope) and get("./extension") resolving to a factory of the module whose default
// export is the plugin. It shares no modules and imports none: it needs only the DOM and fetch.
//
// The plugin annotates each assignment row of nbgrader's Assignment List with "week N, due
// <date>" (the student's own due date, extension included), read once from our server
// extension's handler (autograder/student_course.py), which holds what the hub passed.
(function () {
  "use strict";
  var NAME = "@interplab/course-schedule";
  var LISTS = ["released_assignments_list", "fetched_assignments_list", "submitted_assignments_list"];
  var MARK = "interplab-due";

  function label(entry) {
    return entry.week === null ? "self-study" : "week " + entry.week + ", due " + entry.due;
  }

  // nbgrader's rows: <div class="list_item row"><div class="col-md-12"><span class="item_name">
  // <span|a>ASSIGNMENT</span|a></span>... (nested notebook rows sit deeper and are left alone)
  function annotate(root, byAssignment) {
    LISTS.forEach(function (id) {
      var rows = root.querySelectorAll("#" + id + " > .list_item > .col-md-12 > .item_name");
      rows.forEach(function (cell) {
        if (cell.querySelector("." + MARK) || !cell.firstElementChild) {
          return;
        }
        var entry = byAssignment[cell.firstElementChild.textContent.trim()];
        if (!entry) {
          return;
        }
        var note = document.createElement("span");
        note.className = MARK;
        note.textContent = " (" + label(entry) + ")"; // text, never markup
        note.style.opacity = "0.75";
        cell.appendChild(note);
      });
    });
  }

  function baseUrl() {
    var config = document.getElementById("jupyter-config-data");
    var url = config ? JSON.parse(config.textContent).baseUrl : "/";
    return url.endsWith("/") ? url : url + "/";
  }

  var plugin = {
    id: NAME + ":plugin",
    description: "Week and due date beside each assignment in nbgrader's Assignment List.",
    autoStart: true,
    activate: function () {
      // as JupyterLab's own requests do: JupyterHub's single-user server accepts a cookie-
      // authenticated fetch only with the _xsrf cookie's value echoed in X-XSRFToken
      var xsrf = document.cookie.match("\\b_xsrf=([^;]*)\\b");
      var headers = xsrf ? { "X-XSRFToken": xsrf[1] } : {};
      fetch(baseUrl() + "interplab/course-schedule", { credentials: "same-origin", headers: headers })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("GET interplab/course-schedule: HTTP " + response.status);
          }
          return response.json();
        })
        .then(function (assignments) {
          var byAssignment = {};
          assignments.forEach(function (entry) {
            byAssignment[entry.assignment] = entry;
          });
          // nbgrader rebuilds its lists on every refresh: annotate whatever rows appear, once
          // per frame however many mutations the frame had
          var pending = false;
          new MutationObserver(function () {
            if (!pending) {
              pending = true;
              requestAnimationFrame(function () {
                pending = false;
                annotate(document, byAssignment);
              });
            }
          }).observe(document.body, { childList: true, subtree: true });
          annotate(document, byAssignment);
        })
        .catch(function (error) {
          console.error(NAME + ": no due dates in the Assignment List:", error);
        });
    }
  };

  var modules = {
    "./extension": function () {
      return { __esModule: true, default: plugin };
    }
  };

  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB[NAME] = {
    init: function () {},
    get: function (module) {
      if (!Object.prototype.hasOwnProperty.call(modules, module)) {
        return Promise.reject(new Error(NAME + " has no module " + module));
      }
      return Promise.resolve(function () {
        return modules[module]();
      });
    }
  };
})();
