// TI Trainer tab: the WebUI's progress bar for a training run, the live loss curve of that run, and a queue
// table that refreshes itself while entries are queued or running.

var ti_trainer_live_task = null; // the press whose live curve may be drawn; null once it has ended

function ti_trainer_start() {
    var id = randomId();
    ti_trainer_live_task = id;
    var container = gradioApp().getElementById('ti_trainer_progress');
    var gallery = gradioApp().getElementById('ti_trainer_gallery');
    ti_trainer_clear_loss(); // never show an earlier job's curve beside this press's result
    // The live curve is read only while this press's task holds the GPU queue, so it is this run's curve.
    // A press that is refused at once (another job trains) has its task marked finished by the server, so this
    // bar ends at its next poll.
    requestProgress(id, container, gallery, function() {
        if (ti_trainer_live_task === id) ti_trainer_live_task = null;
        ti_trainer_clear_loss();
    }, function(res) {
        if (res.active) ti_trainer_refresh_loss(id);
    });
    var args = Array.from(arguments);
    args[0] = id;
    return args;
}

// When a Train or Continue press is over (trained, or refused at once), its bar is hidden at once; the WebUI's own
// poll then removes it (the server marked the task finished).
function ti_trainer_end() {
    var container = gradioApp().getElementById('ti_trainer_progress');
    var bar = container ? container.parentNode.querySelector('.progressDiv') : null;
    if (bar) bar.style.display = 'none';
    return [];
}

function ti_trainer_clear_loss() {
    var holder = gradioApp().getElementById('ti_trainer_loss');
    if (holder) holder.replaceChildren(); // the result shows the finished run's own curve
}

function ti_trainer_refresh_loss(id) {
    var holder = gradioApp().getElementById('ti_trainer_loss');
    if (!holder) return;
    var img = new Image();
    img.alt = 'loss curve';
    img.onload = function() {
        if (ti_trainer_live_task === id) holder.replaceChildren(img); // a curve arriving after the end is dropped
    };
    img.src = './ti-trainer/ui/jobs/current/loss.svg?t=' + Date.now();
}

function ti_trainer_grid_start() {
    var id = randomId();
    requestProgress(id, gradioApp().getElementById('ti_trainer_grid_info'), gradioApp().getElementById('ti_trainer_grid_gallery'), function() {});
    var args = Array.from(arguments);
    args[0] = id;
    return args;
}

// While the queue table is on screen and shows a queued or running entry, press its Refresh every 2 s.
setInterval(function() {
    if (document.hidden || typeof gradioApp !== 'function') return;
    var table = gradioApp().getElementById('ti_trainer_queue_table');
    var refresh = gradioApp().getElementById('ti_trainer_queue_refresh');
    if (!table || !refresh || table.offsetParent === null) return;
    var cells = table.querySelectorAll('td');
    for (var i = 0; i < cells.length; i++) {
        var text = cells[i].textContent.trim();
        if (text === 'queued' || text === 'running') {
            refresh.click();
            return;
        }
    }
}, 2000);

// Opening the TI Trainer tab refreshes its embedding lists: files may have come and gone since the page loaded.
onUiTabChange(function() {
    var tab = get_uiCurrentTabContent();
    if (!tab || tab.id !== 'tab_ti_trainer_tab') return;
    ['ti_trainer_grid_refresh', 'ti_trainer_inspect_refresh'].forEach(function(id) {
        var button = gradioApp().getElementById(id);
        if (button) button.click();
    });
});
