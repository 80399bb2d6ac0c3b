// The page's only script: send the chosen photo to /predict, show the answer, the cards and the
// similar images (from /images/<id>). No framework, no build step, nothing from another site.
"use strict";

const $ = (id) => document.getElementById(id);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

function percent(probability) {
  return (100 * probability).toLocaleString("fr-FR", { minimumFractionDigits: 1, maximumFractionDigits: 1 }) + " %";
}

function fruitItem(fruit) {
  const card = fruit.card;
  const title = card ? `${card.name_fr}` : fruit.label;
  const head = element("div", { class: "fruit-head" }, element("span", { class: "name" }, title),
    element("span", { class: "probability" }, percent(fruit.probability)));
  const bar = element("div", { class: "bar" }, element("span", { style: `width: ${(100 * fruit.probability).toFixed(1)}%` }));
  const about = card
    ? element("div", { class: "card" },
        element("span", { lang: "en" }, card.name_en), ` · ${card.family} · `, element("i", {}, card.species),
        ` · classe ${fruit.label}`)
    : element("div", { class: "card" }, `classe ${fruit.label} (pas de fiche / no card)`);
  return element("li", { class: "fruit", "data-label": fruit.label, "data-probability": String(fruit.probability) }, head, bar, about);
}

function similarItem(image) {
  const picture = element("img", { src: `/images/${image.image_id}`, alt: image.label, loading: "lazy" });
  return element("li", { class: "similar", "data-image-id": image.image_id, "data-label": image.label },
    picture, element("div", {}, element("b", {}, image.label)),
    element("div", { class: "card" }, `${image.split} · distance ${image.distance.toFixed(2)}`));
}

function showAnswer(answer) {
  $("fruits").replaceChildren(...answer.top.map(fruitItem));
  $("similar").replaceChildren(...answer.similar.map(similarItem));
  $("answer").hidden = false;
  $("neighbours").hidden = false;
  const best = answer.top[0];
  setStatus(`C'est sans doute : ${best.card ? best.card.name_fr : best.label} (${percent(best.probability)}).`, "done");
}

async function predict(file) {
  $("preview").src = URL.createObjectURL(file);
  $("photo-name").textContent = file.name;
  $("answer").hidden = false;
  $("neighbours").hidden = true;
  $("fruits").replaceChildren();
  setStatus("Analyse en cours…", "busy");
  const body = new FormData();
  body.append("file", file, file.name);
  let response, answer;
  try {
    response = await fetch("/predict", { method: "POST", body });
    answer = await response.json();
  } catch (error) {
    setStatus(`Le service ne répond pas (${error}).`, "error");
    return;
  }
  if (!response.ok) {
    setStatus(`Photo refusée : ${answer.error || response.statusText}`, "error");
    return;
  }
  showAnswer(answer);
}

async function showVersions() {
  try {
    const response = await fetch("/health");
    const health = await response.json();
    $("versions").textContent = response.ok
      ? `classifieur ${health.classifier_version} · modèle PCA ${health.gold_model_version} · ${health.lake_images} images dans le lac`
      : `service indisponible : ${health.reason}`;
  } catch (error) {
    $("versions").textContent = `service injoignable (${error})`;
  }
}

$("photo").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) predict(file);
});
showVersions();
