// TI Trainer tab: the WebUI's progress bar for a training run, plus the live loss curve.

function ti_trainer_start() {
    var id = randomId();
    var container = gradioApp().getElementById('ti_trainer_progress');
    var gallery = gradioApp().getElementById('ti_trainer_gallery');
    requestProgress(id, container, gallery, function() {
        ti_trainer_refresh_loss();
    }, function() {
        ti_trainer_refresh_loss();
    });
    var args = Array.from(arguments);
    args[0] = id;
    return args;
}

function ti_trainer_refresh_loss() {
    var holder = gradioApp().getElementById('ti_trainer_loss');
    if (!holder) return;
    var img = new Image();
    img.alt = 'loss curve';
    img.onload = function() {
        holder.replaceChildren(img);
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
